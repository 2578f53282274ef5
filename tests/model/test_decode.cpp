// Cached decoding (model/decode.h) against the full forward with causal routing: the logits
// after every position agree, in float64 (1e-10) and float32 (1e-5, relative to the largest
// logit), for each attention type alone, both CCQA layouts, MoD, MoR and the default pattern.
// The models are tiny and random with every parameter away from its init (convolutions that
// read earlier tokens, routers that skip about half the tokens), and the Sensitive* tests
// check that the comparison notices a cache that loses a piece of its state.
#include <cmath>
#include <string>
#include <vector>

#include "common/errors.h"
#include "model/decode.h"
#include "model/hydra_model.h"
#include "model_test_util.h"

namespace hydra::model {
namespace {

using test::small_config;

constexpr int kVocab = 61;
constexpr int64_t kTokens = 24;

struct Shape {
  std::vector<std::string> pattern;
  bool mod = false;
  int recursions = 1;
  std::string compress = "head_dim";
};

ModelConfig decode_config(const Shape& s) {
  ModelConfig c = small_config(kVocab);
  c.pattern = s.pattern;
  c.macro_blocks = 2;
  c.mod.enabled = s.mod;
  c.mod.layers.clear();
  for (int l = 1; l < static_cast<int>(s.pattern.size()); l += 2) c.mod.layers.push_back(l);
  if (c.mod.layers.empty()) c.mod.layers = {0};
  c.mor.recursions = s.recursions;
  c.ccqa.compress = s.compress;
  c.tie_embeddings = false;
  return c;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Every parameter away from its init: projections of unit gain (activations of order 1, so
// that attention is far from uniform), convolutions with every tap, temperatures, norm gains,
// and routers with bias 0 whose scores are of order 1 (about half the tokens chosen).
void randomize(HydraModelImpl& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  const double E = static_cast<double>(m.dims.E);
  for (auto& item : m.named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor t = item.value();
    if (name.find("router") != std::string::npos) {
      if (ends_with(name, "bias")) t.zero_(); else t.normal_(0.0, 1.0 / std::sqrt(E));
    } else if (ends_with(name, "norm.weight")) {
      t.uniform_(0.5, 1.5);
    } else if (name.find("conv") != std::string::npos) {
      t.normal_(0.0, 0.5);
    } else if (ends_with(name, "tau")) {
      t.normal_(0.0, 0.3);
    } else if (name == "embed.weight") {
      t.normal_(0.0, 1.0);
    } else if (t.dim() == 2) {
      t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(t.size(1))));
    }
  }
}

HydraModel random_model(const Shape& s, torch::Dtype dtype) {
  torch::manual_seed(0);
  auto m = std::make_shared<HydraModelImpl>(decode_config(s));
  randomize(*m);
  m->to(dtype);
  m->eval();
  return m;
}

torch::Tensor random_tokens(int64_t n, int seed = 3) {
  torch::manual_seed(seed);
  return torch::randint(kVocab, {n}, torch::kLong);
}

ModelOutput full_forward(HydraModel& m, const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  ForwardOptions causal;
  causal.causal_routing = true;
  return m->forward(tokens.unsqueeze(0), {}, causal);
}

// The largest |cached - full| over the positions from prefix-1 on, relative to the largest full
// logit (at least 1): prefill of the first `prefix` tokens, then one decode_step per token.
double max_decode_error(HydraModel& m, const torch::Tensor& tokens, int64_t prefix) {
  const torch::Tensor full = full_forward(m, tokens).logits.select(0, 0).narrow(-1, 0, kVocab).to(torch::kDouble);
  Decoded d = prefill(*m, tokens.narrow(0, 0, prefix), tokens.size(0));
  double worst = 0;
  auto compare = [&](const torch::Tensor& logits, int64_t t) {
    const torch::Tensor got = logits.narrow(0, 0, kVocab).to(torch::kDouble);
    const torch::Tensor want = full.select(0, t);
    const double scale = std::max(1.0, want.abs().max().item<double>());
    worst = std::max(worst, (got - want).abs().max().item<double>() / scale);
  };
  compare(d.logits, prefix - 1);
  for (int64_t t = prefix; t < tokens.size(0); ++t) compare(decode_step(*m, d.state, tokens[t].item<int64_t>()), t);
  EXPECT_EQ(d.state.length(), tokens.size(0));
  return worst;
}

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

TEST(Decode, MorDefaultPatternMatchesFullForward) {
  expect_decoding_matches({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2});
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
  const Shape s{{"mqa", "ccqa", "mla"}};
  HydraModel m = random_model(s, torch::kDouble);
  const torch::Tensor tokens = random_tokens(kTokens);
  const Decoded base = prefill(*m, tokens.narrow(0, 0, 10), kTokens);
  DecodeState ok = base.state;
  const torch::Tensor want = decode_step(*m, ok, tokens[10].item<int64_t>());
  for (int l = 0; l < 3; ++l) {
    DecodeState broken = base.state;
    AttentionCache& cache = broken.blocks[0].recursions[0][l];
    // Drop the oldest token's entry: the next token attends to one token fewer.
    if (auto* c = std::get_if<MqaCache>(&cache)) c->k = c->k.narrow(1, 1, 9), c->v = c->v.narrow(1, 1, 9);
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

}  // namespace
}  // namespace hydra::model
