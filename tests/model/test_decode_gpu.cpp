// Cached decoding on CUDA (CUDA build, label gpu): the full forward there runs the fused CCQA
// kernels and SDPA, decoding the reference ops against the caches; the logits agree at every
// position to float32 rounding (TF32 off), and in bfloat16 to bf16 rounding where no router
// decides (a score within rounding of 0 may route differently in the two orders of operations);
// seen on an H200 (2026-12-04): float32 1.2e-6, bfloat16 3.3e-2 of the largest logit (a broken
// cache gives 0.5 to 1).
#include <optional>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/Context.h>

#include "decode_test_util.h"
#include "model/decode_attention_cuda.h"
#include "model/attention.h"
#include "model/decode_batch.h"
#include "model/decode_conv.h"
#include "model/decode_conv_cuda.h"
#include "model/sampling.h"

namespace hydra::model {
namespace {

using namespace test;  // the decoding helpers (decode_test_util.h)

const torch::Device kCuda(torch::kCUDA);

void expect_close_on_cuda(const Shape& s, torch::Dtype dtype, double tol) {
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  const torch::Tensor tokens = random_tokens(kTokens, 3, kCuda);
  HydraModel m = random_model(s, dtype, kCuda);
  const double by_token = max_decode_error(m, tokens, 1), prefilled = max_decode_error(m, tokens, 9);
  std::printf("%s: largest relative difference %.2e token by token, %.2e after a prefill of 9\n",
              torch::toString(dtype), by_token, prefilled);
  EXPECT_LT(by_token, tol);
  EXPECT_LT(prefilled, tol);
}

// E 128, 4 heads: d 32, CCQA d_h 16 (head_dim) or 32 (heads), shapes the fused kernels take;
// E 256: d_h 64 under heads, the head size of `small` under the default layout (its prologue
// on the products path, docs/MODEL.md "Layout").
TEST(DecodeGpu, Float32MatchesFusedForward) {
  expect_close_on_cuda({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2, "head_dim", 128, "fused"}, torch::kFloat,
                       1e-4);
  expect_close_on_cuda({{"ccqa"}, false, 1, "heads", 128, "fused"}, torch::kFloat, 1e-4);
  expect_close_on_cuda({{"ccqa", "mqa"}, false, 1, "heads", 256, "fused"}, torch::kFloat, 1e-4);
}

// Rows decoded together on CUDA (model/decode_batch.h: masks, no host reads) equal their single
// steps (float32), rows at different lengths.
TEST(DecodeGpu, BatchEqualsSingleSteps) {
  const Shape s{ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2, "head_dim", 128, "fused"};
  HydraModel m = random_model(s, torch::kFloat, kCuda);
  const torch::Tensor tokens = random_tokens(kTokens, 3, kCuda);
  const Decoded d = prefill(*m, tokens.narrow(0, 0, 6), kTokens);
  std::vector<DecodeState> alone(3, d.state);
  decode_step(*m, alone[1], 7);
  DecodeBatch batch(*m, 3, kTokens);
  for (int64_t row = 0; row < 3; ++row) batch.load(row, d.state);
  batch.step({0, 7, 0}, {false, true, false});
  for (int64_t step = 0; step < 6; ++step) {
    const int64_t t = tokens[6 + step].item<int64_t>();
    const std::vector<int64_t> next = {t, (t + 1) % kVocab, (t + 2) % kVocab};
    const torch::Tensor together = batch.step(next);
    for (size_t i = 0; i < 3; ++i) {
      const torch::Tensor single = decode_step(*m, alone[i], next[i]);
      const double scale = std::max(1.0, single.narrow(0, 0, kVocab).abs().max().item<double>());
      EXPECT_LT((together[static_cast<int64_t>(i)] - single).narrow(0, 0, kVocab).abs().max().item<double>() / scale, 1e-5);
    }
  }
}

TEST(DecodeGpu, Bfloat16MatchesFusedForward) {
  expect_close_on_cuda({ModelConfig{}.pattern, false, 1, "head_dim", 128, "fused"}, torch::kBFloat16, 1e-1);
}

// hydra generate's draw on the GPU (model::sample_rows on the device's logits) chooses what the
// host's draw chooses from the same uniforms (a parallel scan's rounding could only move a
// uniform within about 1e-16 of a boundary), for every kind of filter, on GPT-2-sized rows
// with ties, float32 and bfloat16 logits.
TEST(SamplingGpu, RowsDrawnOnTheDeviceEqualTheHostsDraws) {
  torch::manual_seed(3);
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const torch::Tensor logits = ((torch::randn({64, 50257}) * 3).round() / 2).to(dtype);
    for (const auto& [t, k, p] : {std::tuple{0.0, 0, 1.0}, std::tuple{0.8, 0, 1.0}, std::tuple{0.8, 40, 1.0},
                                  std::tuple{1.0, 0, 0.9}, std::tuple{1.3, 200, 0.95}}) {
      SamplingOptions o;
      o.temperature = t, o.top_k = k, o.top_p = p;
      std::mt19937_64 rng(static_cast<uint64_t>(k + 1000 * p));
      std::vector<double> uniforms;
      for (int64_t i = 0; t > 0 && i < logits.size(0); ++i) uniforms.push_back(std::uniform_real_distribution<double>(0.0, 1.0)(rng));
      EXPECT_EQ(sample_rows(logits.to(kCuda), o, uniforms), sample_rows(logits, o, uniforms))
          << torch::toString(dtype) << ", T " << t << ", top_k " << k << ", top_p " << p;
    }
  }
}

// One decode step's put + attention (model/decode_attention.h) by the fused kernels against the
// unfused ops on the CPU in float64 from the same numbers: the output within the storage type's
// rounding, every slot bit-equal (the new token in slot count[b] of each row, nothing else
// changed). Shapes: one row and key/value head split over many key ranges (and the combine),
// rows at different counts incl. one past the span (an inactive row), MLA's values in its keys,
// 32 query heads a key/value head, 64 rows.
struct RowsCase {
  int64_t B, H, Hkv, dk, dv, capacity, span;
  bool values_in_keys;
  std::vector<int64_t> counts;  // empty: random below span
};

void expect_fused_step_matches(const RowsCase& c, torch::Dtype dtype, double tol) {
  torch::manual_seed(c.B * 7 + c.dk);
  const auto in = [&](std::vector<int64_t> shape) { return torch::randn(shape).to(dtype).to(torch::kDouble); };
  const torch::Tensor q = in({c.B, c.H, c.dk}), k_new = in({c.B, c.Hkv, c.dk});
  const torch::Tensor v_new = c.values_in_keys ? torch::Tensor() : in({c.B, c.Hkv, c.dv});
  const torch::Tensor k0 = in({c.B, c.capacity, c.Hkv, c.dk}), v0 = in({c.B, c.capacity, c.Hkv, c.dv});
  torch::Tensor count = c.counts.empty() ? torch::randint(0, c.span, {c.B}, torch::kLong) : torch::tensor(c.counts);
  const auto on = [&](const torch::Tensor& t, torch::Device d, torch::Dtype as) {
    return t.defined() ? t.to(d, as) : torch::Tensor();
  };
  // The float64 reference on the CPU.
  CacheRows cpu{GqaCache{}, count.clone(), c.capacity};
  torch::Tensor k_ref = k0.clone(), v_ref = c.values_in_keys ? torch::Tensor() : v0.clone();
  RowsToken token{q, k_new, v_new, c.dv};
  const torch::Tensor ref = put_and_attend_rows(token, k_ref, v_ref, cpu, c.span, 0.125);
  // The kernels.
  CacheRows gpu{GqaCache{}, count.to(kCuda), c.capacity};
  torch::Tensor k_gpu = on(k0, kCuda, dtype), v_gpu = c.values_in_keys ? torch::Tensor() : on(v0, kCuda, dtype);
  const RowsToken token_gpu{on(q, kCuda, dtype), on(k_new, kCuda, dtype), on(v_new, kCuda, dtype), c.dv};
  const std::optional<torch::Tensor> out = put_and_attend_rows_cuda(token_gpu, k_gpu, v_gpu, gpu, c.span, 0.125);
  ASSERT_TRUE(out.has_value()) << "the kernels refused B " << c.B << " H " << c.H << "/" << c.Hkv;
  const double err = (out->to(torch::kCPU, torch::kDouble) - ref).abs().max().item<double>();
  std::printf("B %ld, H %ld/%ld, sizes %ld/%ld, span %ld, %s: largest difference %.2e\n", static_cast<long>(c.B),
              static_cast<long>(c.H), static_cast<long>(c.Hkv), static_cast<long>(c.dk), static_cast<long>(c.dv),
              static_cast<long>(c.span), torch::toString(dtype), err);
  EXPECT_LT(err, tol);
  EXPECT_TRUE(torch::equal(k_gpu.to(torch::kCPU, torch::kDouble), k_ref));
  if (!c.values_in_keys) EXPECT_TRUE(torch::equal(v_gpu.to(torch::kCPU, torch::kDouble), v_ref));
  EXPECT_TRUE(torch::equal(gpu.count.cpu(), count));
}

TEST(DecodeAttentionGpu, FusedStepEqualsTheUnfusedOpsInFloat64) {
  const std::vector<RowsCase> cases = {
      {1, 12, 1, 64, 64, 1025, 896, false, {700}},
      {5, 8, 2, 16, 16, 200, 128, false, {0, 17, 127, 63, 150}},
      {3, 12, 1, 416, 384, 300, 256, true, {5, 255, 100}},
      {2, 32, 1, 32, 32, 130, 128, false, {3, 90}},
      {64, 12, 3, 32, 32, 1100, 1024, false, {}},
  };
  for (const RowsCase& c : cases) {
    expect_fused_step_matches(c, torch::kFloat, 1e-5);
    expect_fused_step_matches(c, torch::kBFloat16, 2e-2);
  }
}

// CCQA's convolutions of one decode step (model/decode_conv.h) by the fused kernel against the
// unfused ops on the CPU in float64 from the same numbers: outputs within the storage type's
// rounding; the history bit-equal (shifted by one input on the rows that write, unchanged on
// the others). Depthwise and grouped convolutions, K 3 and 4, with and without bias.
TEST(DecodeConvGpu, FusedRowsEqualTheUnfusedOpsInFloat64) {
  struct Case {
    int64_t B, C, group_size, K;
    bool bias;
  };
  for (const Case& c : {Case{5, 192, 1, 3, true}, Case{5, 192, 16, 3, true}, Case{64, 48, 16, 4, false}}) {
    for (const auto& [dtype, tol] : {std::pair{torch::kFloat, 1e-5}, std::pair{torch::kBFloat16, 3e-2}}) {
      torch::manual_seed(c.C + c.K);
      const auto in = [&](std::vector<int64_t> shape) { return torch::randn(shape).to(dtype).to(torch::kDouble); };
      // The module's tensors replaced by float64 ones (the reference runs in float64).
      CausalConvImpl conv(c.C, c.group_size, c.K);
      conv.weight = in({c.C, c.group_size, c.K});
      conv.bias = c.bias ? in({c.C}) : torch::Tensor();
      const torch::Tensor history0 = in({c.B, c.K - 1, c.C}), x = in({c.B, 1, c.C});
      const torch::Tensor write = torch::arange(c.B) % 3 != 1;
      torch::Tensor history_ref = history0.clone();
      const torch::Tensor ref = convolve_rows(conv, history_ref, x, write);
      const torch::Tensor bias = c.bias ? conv.bias.to(kCuda, dtype) : torch::Tensor();
      torch::Tensor history = history0.to(kCuda, dtype);
      const std::optional<torch::Tensor> out = convolve_rows_cuda(conv.weight.to(kCuda, dtype), bias, c.group_size,
                                                                  history, x.to(kCuda, dtype), write.to(kCuda));
      ASSERT_TRUE(out.has_value()) << "the kernel refused C " << c.C;
      const double err = (out->to(torch::kCPU, torch::kDouble) - ref).abs().max().item<double>();
      std::printf("B %ld, C %ld, groups of %ld, K %ld, %s: largest difference %.2e\n", static_cast<long>(c.B),
                  static_cast<long>(c.C), static_cast<long>(c.group_size), static_cast<long>(c.K), torch::toString(dtype),
                  err);
      EXPECT_LT(err, tol * std::max(1.0, ref.abs().max().item<double>()));
      EXPECT_TRUE(torch::equal(history.to(torch::kCPU, torch::kDouble), history_ref));
    }
  }
}

}  // namespace
}  // namespace hydra::model
