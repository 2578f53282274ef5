// Cached decoding (model/decode.h) against the full forward with causal routing: the logits
// after every position agree, in float64 (1e-10) and float32 (1e-5, relative to the largest
// logit), for each attention type alone (MQA, GQA, MHA, CCQA, MLA), both CCQA layouts, MoD, MoR
// and the default pattern.
// The models are tiny and random with every parameter away from its init (convolutions that
// read earlier tokens, routers that skip about half the tokens), and the Sensitive* tests
// check that the comparison notices a cache that loses a piece of its state.
#include "common/errors.h"
#include "decode_test_util.h"
#include "model/model_info.h"

namespace hydra::model {
namespace {

using namespace test;  // the decoding helpers (decode_test_util.h)

// Token by token (prefill of one token) and from a prefilled prompt of 9, in both precisions.
void expect_decoding_matches(const Shape& s) {
  const torch::Tensor tokens = random_tokens(kTokens);
  for (const auto& [dtype, tol] : {std::pair{torch::kDouble, 1e-10}, std::pair{torch::kFloat, 1e-5}}) {
    HydraModel m = random_model(s, dtype);
    EXPECT_LT(max_decode_error(m, tokens, 1), tol) << "token by token, " << torch::toString(dtype);
    EXPECT_LT(max_decode_error(m, tokens, 9), tol) << "prefill of 9, " << torch::toString(dtype);
  }
}

// Selected and candidate tokens of the routers whose names contain `which`, in the full forward.
std::pair<int64_t, int64_t> routed(const ModelOutput& out, const std::string& which) {
  int64_t selected = 0, candidates = 0;
  for (const RoutingStat& stat : out.routing) {
    if (stat.name.find(which) == std::string::npos) continue;
    selected += stat.selected;
    candidates += stat.candidates;
  }
  return {selected, candidates};
}

TEST(Decode, MqaMatchesFullForward) { expect_decoding_matches({{"mqa"}}); }
TEST(Decode, GqaMatchesFullForward) { expect_decoding_matches({{"gqa"}}); }  // 4 heads on 2 KV heads
TEST(Decode, MhaMatchesFullForward) { expect_decoding_matches({{"mha"}}); }
TEST(Decode, CcqaMatchesFullForward) { expect_decoding_matches({{"ccqa"}}); }
TEST(Decode, CcqaHeadsLayoutMatchesFullForward) { expect_decoding_matches({{"ccqa"}, false, 1, "heads"}); }
TEST(Decode, MlaMatchesFullForward) { expect_decoding_matches({{"mla"}}); }
TEST(Decode, DefaultPatternMatchesFullForward) { expect_decoding_matches({ModelConfig{}.pattern}); }

TEST(Decode, ModMatchesFullForward) {
  const Shape s{ModelConfig{}.pattern, /*mod=*/true};
  // The routers skip some tokens and keep others, or the test would not exercise skipping.
  HydraModel m = random_model(s, torch::kDouble);
  const auto [selected, candidates] = routed(full_forward(m, random_tokens(kTokens)), ".router");
  EXPECT_GT(selected, candidates / 5);
  EXPECT_LT(selected, candidates * 4 / 5);
  expect_decoding_matches(s);
}

TEST(Decode, MorMatchesFullForward) {
  const Shape s{{"mqa", "ccqa", "mla"}, /*mod=*/true, /*recursions=*/3};
  HydraModel m = random_model(s, torch::kDouble);
  const ModelOutput out = full_forward(m, random_tokens(kTokens));
  const auto [selected, candidates] = routed(out, "mor_routers");
  EXPECT_GT(selected, candidates / 5);
  EXPECT_LT(selected, candidates * 4 / 5);
  expect_decoding_matches(s);
}

TEST(Decode, GroupedKindsWithModAndMorMatchFullForward) {
  expect_decoding_matches({{"gqa", "mha", "mqa"}, /*mod=*/true, /*recursions=*/2});
}

TEST(Decode, MorDefaultPatternMatchesFullForward) {
  expect_decoding_matches({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2});
}

// CCQA's switches and kernel sizes: the cached steps follow each (K 1 keeps no history).
TEST(Decode, CcqaVariantsMatchFullForward) {
  const torch::Tensor tokens = random_tokens(kTokens);
  for (int variant = 0; variant < kCcqaVariants; ++variant) {
    HydraModel model = ccqa_variant_model(variant);
    EXPECT_LT(max_decode_error(model, tokens, 1), 1e-10) << "variant " << variant;
    EXPECT_LT(max_decode_error(model, tokens, 7), 1e-10) << "variant " << variant;
  }
}

// A skipped token leaves no cache entry: MoD layers and later recursions hold fewer tokens.
TEST(Decode, RoutedLayersCacheOnlyTheirTokens) {
  const Shape s{{"mqa", "ccqa", "mla"}, /*mod=*/true, /*recursions=*/2};
  HydraModel m = random_model(s, torch::kDouble);
  const Decoded d = prefill(*m, random_tokens(kTokens), kTokens);
  for (const BlockCache& block : d.state.blocks) {
    ASSERT_EQ(block.recursions.size(), 2u);
    EXPECT_EQ(cached_tokens(block.recursions[0][0]), kTokens);  // layer 0: no MoD router
    EXPECT_LT(cached_tokens(block.recursions[0][1]), kTokens);  // layer 1: MoD
    EXPECT_LT(cached_tokens(block.recursions[1][0]), kTokens);  // recursion 2: the routed ones
  }
  EXPECT_LT(d.state.cache_entries(), kTokens * 3 * 2 * 2);
}

// The cache holds what docs/MODEL.md counts (compute_model_stats, bf16): per token and layer
// 2 H_kv d (MQA 1, GQA model.kv_heads, MHA H), 2 Lk (CCQA, both layouts), d_c + d_r (MLA);
// routed layers hold less.
TEST(Decode, CacheBytesAreTheCountedBytes) {
  for (const std::string compress : {"head_dim", "heads"}) {
    const Shape dense{ModelConfig{}.pattern, false, 1, compress};
    HydraModel m = random_model(dense, torch::kBFloat16);
    const Decoded d = prefill(*m, random_tokens(10), kTokens);
    const int64_t counted = compute_model_stats(decode_config(dense), kTokens).kv_cache_bytes_per_token;
    EXPECT_EQ(d.state.cache_bytes(), counted * 10) << compress;
  }
  {
    // d 8, 4 heads, 2 KV heads, 2 macro-blocks: 2 bytes x 2 (k, v) x (1 + 2 + 4) heads x 8 a block.
    const Shape grouped{{"mqa", "gqa", "mha"}};
    HydraModel m = random_model(grouped, torch::kBFloat16);
    const Decoded d = prefill(*m, random_tokens(10), kTokens);
    const int64_t counted = compute_model_stats(decode_config(grouped), kTokens).kv_cache_bytes_per_token;
    EXPECT_EQ(counted, 2 * (2 * 2 * (1 + 2 + 4) * 8));
    EXPECT_EQ(d.state.cache_bytes(), counted * 10);
  }
  const Shape routed{ModelConfig{}.pattern, true, 2};
  HydraModel m = random_model(routed, torch::kBFloat16);
  const Decoded d = prefill(*m, random_tokens(10), kTokens);
  EXPECT_LT(d.state.cache_bytes(), compute_model_stats(decode_config(routed), kTokens).kv_cache_bytes_per_token * 10);
}

// The comparison notices a lost piece of CCQA's state: clearing any one of the convolutions'
// histories or the value shift's last projection changes the next logits.
TEST(Decode, SensitiveToEveryCcqaState) {
  const Shape s{{"ccqa"}};
  HydraModel m = random_model(s, torch::kDouble);
  const torch::Tensor tokens = random_tokens(kTokens);
  const Decoded base = prefill(*m, tokens.narrow(0, 0, 10), kTokens);
  DecodeState ok = base.state;
  const torch::Tensor want = decode_step(*m, ok, tokens[10].item<int64_t>());
  using Member = torch::Tensor CcqaCache::*;
  for (const Member piece : {&CcqaCache::conv1_q, &CcqaCache::conv1_k, &CcqaCache::conv2_q, &CcqaCache::conv2_k,
                             &CcqaCache::v0_last}) {
    DecodeState broken = base.state;
    CcqaCache& cache = std::get<CcqaCache>(broken.blocks[1].recursions[0][0]);
    cache.*piece = torch::zeros_like(cache.*piece);
    const torch::Tensor got = decode_step(*m, broken, tokens[10].item<int64_t>());
    EXPECT_GT((got - want).narrow(0, 0, kVocab).abs().max().item<double>(), 1e-3);
  }
}

// ... and a lost key/value entry of any type.
TEST(Decode, SensitiveToEveryKvEntry) {
  const Shape s{{"mqa", "ccqa", "mla", "gqa"}};
  HydraModel m = random_model(s, torch::kDouble);
  const torch::Tensor tokens = random_tokens(kTokens);
  const Decoded base = prefill(*m, tokens.narrow(0, 0, 10), kTokens);
  DecodeState ok = base.state;
  const torch::Tensor want = decode_step(*m, ok, tokens[10].item<int64_t>());
  for (int l = 0; l < 4; ++l) {
    DecodeState broken = base.state;
    AttentionCache& cache = broken.blocks[0].recursions[0][l];
    // Drop the oldest token's entry: the next token attends to one token fewer.
    if (auto* c = std::get_if<GqaCache>(&cache)) c->k = c->k.narrow(1, 1, 9), c->v = c->v.narrow(1, 1, 9);
    if (auto* c = std::get_if<CcqaCache>(&cache)) c->k = c->k.narrow(1, 1, 9), c->v = c->v.narrow(1, 1, 9);
    if (auto* c = std::get_if<MlaCache>(&cache)) c->latent = c->latent.narrow(1, 1, 9);
    const torch::Tensor got = decode_step(*m, broken, tokens[10].item<int64_t>());
    EXPECT_GT((got - want).narrow(0, 0, kVocab).abs().max().item<double>(), 1e-3) << "layer " << l;
  }
}

// A copied state is an independent fork: continuing one copy leaves the other as it was.
TEST(Decode, CopiedStateForks) {
  HydraModel m = random_model({ModelConfig{}.pattern, true, 2}, torch::kDouble);
  const torch::Tensor tokens = random_tokens(kTokens);
  Decoded d = prefill(*m, tokens.narrow(0, 0, 6), kTokens);
  DecodeState fork = d.state;
  for (int64_t t = 6; t < 12; ++t) decode_step(*m, fork, (tokens[t].item<int64_t>() + 1) % kVocab);
  EXPECT_EQ(d.state.length(), 6);
  const torch::Tensor after = decode_step(*m, d.state, tokens[6].item<int64_t>());
  const torch::Tensor full = full_forward(m, tokens.narrow(0, 0, 7)).logits.select(0, 0).select(0, 6);
  EXPECT_LT((after - full).narrow(0, 0, kVocab).abs().max().item<double>(), 1e-10);
}

TEST(Decode, RefusesWrongUse) {
  HydraModel m = random_model({{"mqa"}}, torch::kFloat);
  HydraModel other = random_model({{"mqa"}}, torch::kFloat);
  EXPECT_THROW(prefill(*m, random_tokens(5), 4), common::RuntimeFailure);  // longer than the context
  Decoded d = prefill(*m, random_tokens(4), 5);
  EXPECT_THROW(decode_step(*other, d.state, 1), common::RuntimeFailure);  // another model's state
  decode_step(*m, d.state, 1);
  EXPECT_TRUE(d.state.full());
  EXPECT_THROW(decode_step(*m, d.state, 1), common::RuntimeFailure);  // full
}

// A pipeline stage cannot decode (tensor parallelism can: tests/parallel/test_tp_decode.cpp):
// the refusal names it.
TEST(Decode, RefusesAPipelineStage) {
  ModelOptions options;
  options.stage = {0, 1};  // the first of the two layers (macro-blocks of one layer)
  torch::manual_seed(0);
  HydraModel stage = std::make_shared<HydraModelImpl>(decode_config({{"mqa"}}), options);
  try {
    prefill(*stage, random_tokens(4), 8);
    ADD_FAILURE() << "prefill decoded on a pipeline stage";
  } catch (const common::RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find("pipeline"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hydra::model
