// Decoding B rows at once with preallocated caches (model/decode_batch.h) against each row's
// full forward with causal routing: rows of different sequences at different lengths, some
// paused for a few steps, every attention type, CCQA's variants, MoD and MoR (whose routers
// skip different tokens in different rows), in float64 (1e-10) and float32 (1e-5, relative to
// the largest logit). Also: a row reloaded with another prompt, a full row left inactive
// beside a growing one, the entries held against single-sequence decoding, the refusals; and a
// model whose same-input projections are packed.
#include <functional>

#include "common/errors.h"
#include "decode_test_util.h"
#include "model/attention.h"
#include "model/decode_batch.h"
#include "model/decode_conv.h"

namespace hydra::model {
namespace {

using namespace test;  // the decoding helpers (decode_test_util.h)

using Pause = std::function<bool(size_t row, int step)>;

torch::Tensor full_logits(HydraModel& m, const torch::Tensor& tokens) {
  return full_forward(m, tokens).logits.select(0, 0).narrow(-1, 0, kVocab).to(torch::kDouble);
}

// |got - want| relative to the largest wanted logit (at least 1).
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  return (got.narrow(0, 0, kVocab).to(torch::kDouble) - want).abs().max().item<double>() / scale;
}

// Row i holds seqs[i], prefilled with its first prefix[i] tokens, then takes one token a step
// (unless paused) until it holds the whole sequence. The largest error against the full forward.
double max_batch_error(HydraModel& m, const std::vector<torch::Tensor>& seqs, const std::vector<int64_t>& prefix,
                       const Pause& pause = [](size_t, int) { return false; }) {
  const size_t B = seqs.size();
  DecodeBatch batch(*m, static_cast<int64_t>(B), kTokens);
  std::vector<torch::Tensor> full;
  double worst = 0;
  for (size_t i = 0; i < B; ++i) {
    full.push_back(full_logits(m, seqs[i]));
    const Decoded d = prefill(*m, seqs[i].narrow(0, 0, prefix[i]), kTokens);
    worst = std::max(worst, relative_error(d.logits, full[i].select(0, prefix[i] - 1)));
    batch.load(static_cast<int64_t>(i), d.state);
  }
  for (int step = 0;; ++step) {
    std::vector<int64_t> tokens(B, 0);
    std::vector<bool> active(B, false);
    bool unfinished = false;
    for (size_t i = 0; i < B; ++i) {
      const int64_t t = batch.length(static_cast<int64_t>(i));
      if (t >= seqs[i].size(0)) continue;
      unfinished = true;
      if (pause(i, step)) continue;
      active[i] = true;
      tokens[i] = seqs[i][t].item<int64_t>();
    }
    if (!unfinished) break;
    const torch::Tensor logits = batch.step(tokens, active);
    for (size_t i = 0; i < B; ++i) {
      if (!active[i]) continue;
      const int64_t t = batch.length(static_cast<int64_t>(i)) - 1;
      worst = std::max(worst, relative_error(logits[static_cast<int64_t>(i)], full[i].select(0, t)));
    }
  }
  return worst;
}

// Three rows: different sequences, prompts of 1, 5 and 9 tokens; the second row paused at steps
// 2 and 3.
double three_rows_error(HydraModel& m) {
  const std::vector<torch::Tensor> seqs = {random_tokens(kTokens, 3), random_tokens(kTokens, 4),
                                           random_tokens(kTokens, 5)};
  return max_batch_error(m, seqs, {1, 5, 9}, [](size_t row, int step) { return row == 1 && (step == 2 || step == 3); });
}

void expect_batch_matches(const Shape& s) {
  for (const auto& [dtype, tol] : {std::pair{torch::kDouble, 1e-10}, std::pair{torch::kFloat, 1e-5}}) {
    HydraModel m = random_model(s, dtype);
    EXPECT_LT(three_rows_error(m), tol) << torch::toString(dtype);
  }
}

// convolve_rows (model/decode_conv.h; on the CPU the unfused ops) against the grouped causal
// convolution written out as a sum, float64: output channel c of group g = c / group_size is
// bias[c] + sum over i < group_size, k < K of w[c][i][k] * input[k][g group_size + i], the inputs
// being the K-1 history rows and the new one; the history then holds the last K-1 inputs on the
// rows that write and is unchanged on the others. The CUDA kernel computes the same sum
// (test_decode_gpu.cpp compares it with this path).
TEST(DecodeConv, RowsEqualTheConvolutionWrittenOut) {
  torch::manual_seed(11);
  const int64_t B = 3, C = 12, gs = 4, K = 3;
  CausalConvImpl conv(C, gs, K);
  conv.weight = torch::randn({C, gs, K}, torch::kDouble);
  conv.bias = torch::randn({C}, torch::kDouble);
  const torch::Tensor history0 = torch::randn({B, K - 1, C}, torch::kDouble), x = torch::randn({B, 1, C}, torch::kDouble);
  const torch::Tensor write = torch::tensor({true, false, true});
  torch::Tensor history = history0.clone();
  const torch::Tensor out = convolve_rows(conv, history, x, write);
  const torch::Tensor inputs = torch::cat({history0, x}, 1);  // [B, K, C]
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      double expected = conv.bias[c].item<double>();
      for (int64_t i = 0; i < gs; ++i) {
        for (int64_t k = 0; k < K; ++k) {
          expected += conv.weight[c][i][k].item<double>() * inputs[b][k][(c / gs) * gs + i].item<double>();
        }
      }
      EXPECT_NEAR(out[b][0][c].item<double>(), expected, 1e-12) << "row " << b << ", channel " << c;
    }
    const torch::Tensor kept = write[b].item<bool>() ? inputs[b].narrow(0, 1, K - 1) : history0[b];
    EXPECT_TRUE(torch::equal(history[b], kept)) << "row " << b;
  }
}

TEST(DecodeBatch, MqaMatchesFullForward) { expect_batch_matches({{"mqa"}}); }
TEST(DecodeBatch, GqaMatchesFullForward) { expect_batch_matches({{"gqa"}}); }
TEST(DecodeBatch, MhaMatchesFullForward) { expect_batch_matches({{"mha"}}); }
TEST(DecodeBatch, CcqaMatchesFullForward) { expect_batch_matches({{"ccqa"}}); }
TEST(DecodeBatch, CcqaHeadsLayoutMatchesFullForward) { expect_batch_matches({{"ccqa"}, false, 1, "heads"}); }
TEST(DecodeBatch, MlaMatchesFullForward) { expect_batch_matches({{"mla"}}); }
TEST(DecodeBatch, DefaultPatternMatchesFullForward) { expect_batch_matches({ModelConfig{}.pattern}); }
TEST(DecodeBatch, ModMatchesFullForward) { expect_batch_matches({ModelConfig{}.pattern, /*mod=*/true}); }
TEST(DecodeBatch, MorMatchesFullForward) { expect_batch_matches({{"mqa", "ccqa", "mla"}, /*mod=*/true, 3}); }
TEST(DecodeBatch, GroupedKindsWithModAndMorMatchFullForward) {
  expect_batch_matches({{"gqa", "mha", "mqa"}, /*mod=*/true, /*recursions=*/2});
}
TEST(DecodeBatch, MorDefaultPatternMatchesFullForward) {
  expect_batch_matches({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2});
}

// CCQA's switches and kernel sizes (K 1 keeps an empty history).
TEST(DecodeBatch, CcqaVariantsMatchFullForward) {
  for (int variant = 0; variant < kCcqaVariants; ++variant) {
    HydraModel m = ccqa_variant_model(variant);
    EXPECT_LT(three_rows_error(m), 1e-10) << "variant " << variant;
  }
}

// A row loaded again (a new prompt, as generate's context restart does) drops what it held,
// convolution histories and value shift included; the other row goes on undisturbed.
// The same-input projections packed (hydra generate packs them, pack_same_input_weights): every
// group of every layer packed, the full forward's logits those of the unpacked model, and
// decoding against the full forward as above.
TEST(DecodeBatch, PackedProjectionsMatchTheUnpackedModel) {
  const Shape shape{{"mqa", "ccqa", "mla", "gqa"}, /*mod=*/true, 2};
  HydraModel packed = random_model(shape, torch::kDouble), unpacked = random_model(shape, torch::kDouble);
  // Per layer: mqa, ccqa and gqa one group (q, k, v), mla three, the MLP one.
  const int groups_per_layer_set = 1 + 1 + 3 + 1 + 4;
  EXPECT_EQ(pack_same_input_weights(*packed), groups_per_layer_set * static_cast<int>(packed->blocks.size()));
  const torch::Tensor tokens = random_tokens(kTokens, 7);
  EXPECT_LT((full_logits(packed, tokens) - full_logits(unpacked, tokens)).abs().max().item<double>(), 1e-12);
  EXPECT_LT(three_rows_error(packed), 1e-10);
}

TEST(DecodeBatch, ReloadedRowStartsOver) {
  HydraModel m = random_model({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2}, torch::kDouble);
  const torch::Tensor first = random_tokens(kTokens, 6), second = random_tokens(kTokens, 7), other = random_tokens(kTokens, 8);
  const torch::Tensor want_second = full_logits(m, second), want_other = full_logits(m, other);
  DecodeBatch batch(*m, 2, kTokens);
  batch.load(0, prefill(*m, first.narrow(0, 0, 5), kTokens).state);
  batch.load(1, prefill(*m, other.narrow(0, 0, 2), kTokens).state);
  for (int64_t t = 0; t < 6; ++t) batch.step({first[5 + t].item<int64_t>(), other[2 + t].item<int64_t>()});
  batch.load(0, prefill(*m, second.narrow(0, 0, 3), kTokens).state);
  EXPECT_EQ(batch.length(0), 3);
  double worst = 0;
  for (int64_t t = 0; t < 10; ++t) {
    const torch::Tensor logits = batch.step({second[3 + t].item<int64_t>(), other[8 + t].item<int64_t>()});
    worst = std::max(worst, relative_error(logits[0], want_second.select(0, 3 + t)));
    worst = std::max(worst, relative_error(logits[1], want_other.select(0, 8 + t)));
  }
  EXPECT_LT(worst, 1e-10);
}

// A full row left inactive writes its step's keys into a spare slot: the next row's cache (after
// it in memory) stays intact.
TEST(DecodeBatch, FullRowLeftInactiveDisturbsNoOtherRow) {
  HydraModel m = random_model({{"mqa", "ccqa", "mla"}}, torch::kDouble);
  const torch::Tensor full_row = random_tokens(kTokens, 9), growing = random_tokens(kTokens, 10);
  const torch::Tensor want = full_logits(m, growing);
  DecodeBatch batch(*m, 2, kTokens);
  batch.load(0, prefill(*m, full_row, kTokens).state);
  batch.load(1, prefill(*m, growing.narrow(0, 0, 1), kTokens).state);
  double worst = 0;
  for (int64_t t = 1; t < kTokens; ++t) {
    const torch::Tensor logits = batch.step({7, growing[t].item<int64_t>()}, {false, true});
    worst = std::max(worst, relative_error(logits[1], want.select(0, t)));
  }
  EXPECT_LT(worst, 1e-10);
  EXPECT_EQ(batch.length(0), kTokens);
}

// The caches hold what single-sequence decoding holds: under MoD and MoR fewer entries than
// tokens times layer instances, different in each row.
TEST(DecodeBatch, HoldsTheEntriesOfSingleSequences) {
  HydraModel m = random_model({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/3}, torch::kDouble);
  std::vector<DecodeState> alone;
  DecodeBatch batch(*m, 3, kTokens);
  for (int i = 0; i < 3; ++i) {
    Decoded d = prefill(*m, random_tokens(4 + i, 20 + i), kTokens);
    batch.load(i, d.state);
    alone.push_back(std::move(d.state));
  }
  int64_t entries = 0, bytes = 0;
  for (int64_t step = 0; step < 10; ++step) {
    const std::vector<int64_t> next = {step % kVocab, (3 * step + 1) % kVocab, (5 * step + 2) % kVocab};
    batch.step(next);
    for (size_t i = 0; i < 3; ++i) decode_step(*m, alone[i], next[i]);
  }
  for (const DecodeState& state : alone) entries += state.cache_entries(), bytes += state.cache_bytes();
  EXPECT_EQ(batch.cache_entries(), entries);
  EXPECT_EQ(batch.cache_bytes(), bytes);
  EXPECT_NE(alone[0].cache_entries(), alone[1].cache_entries());  // routed differently
  EXPECT_GT(batch.allocated_bytes(), batch.cache_bytes());
}

TEST(DecodeBatch, RefusesWrongUse) {
  HydraModel m = random_model({{"mqa"}}, torch::kFloat);
  HydraModel other = random_model({{"mqa"}}, torch::kFloat);
  DecodeBatch batch(*m, 2, 5);
  EXPECT_THROW(batch.step({1, 2}), common::RuntimeFailure);  // rows hold nothing yet
  EXPECT_THROW(batch.load(0, prefill(*other, random_tokens(3), 5).state), common::RuntimeFailure);  // another model
  EXPECT_THROW(batch.load(2, prefill(*m, random_tokens(3), 5).state), common::RuntimeFailure);      // no such row
  batch.load(0, prefill(*m, random_tokens(4), 5).state);
  batch.load(1, prefill(*m, random_tokens(3), 5).state);
  EXPECT_THROW(batch.step({1}), common::RuntimeFailure);  // a token short
  batch.step({1, 2});
  EXPECT_THROW(batch.step({1, 2}), common::RuntimeFailure);  // row 0 full
  batch.step({1, 2}, {false, true});
  EXPECT_EQ(batch.length(1), 5);
}

// A pipeline stage cannot hold a batch either (the refusal names it, as prefill's does).
TEST(DecodeBatch, RefusesAPipelineStage) {
  ModelOptions options;
  options.stage = {0, 1};
  torch::manual_seed(0);
  HydraModel stage = std::make_shared<HydraModelImpl>(decode_config({{"mqa"}}), options);
  try {
    DecodeBatch batch(*stage, 2, 8);
    ADD_FAILURE() << "a batch on a pipeline stage";
  } catch (const common::RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find("pipeline"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hydra::model
