// Cached decoding on CUDA (CUDA build, label gpu): the full forward there runs the fused CCQA
// kernels and SDPA, decoding the reference ops against the caches; the logits agree at every
// position to float32 rounding (TF32 off), and in bfloat16 to bf16 rounding where no router
// decides (a score within rounding of 0 may route differently in the two orders of operations);
// seen on an H200 (2026-12-04): float32 1.2e-6, bfloat16 3.3e-2 of the largest logit (a broken
// cache gives 0.5 to 1).
#include <random>
#include <tuple>
#include <vector>

#include <ATen/Context.h>

#include "decode_test_util.h"
#include "model/decode_batch.h"
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

// E 128, 4 heads: d 32, CCQA d_h 16 (head_dim) or 32 (heads), shapes the fused kernels take.
TEST(DecodeGpu, Float32MatchesFusedForward) {
  expect_close_on_cuda({ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2, "head_dim", 128, "fused"}, torch::kFloat,
                       1e-4);
  expect_close_on_cuda({{"ccqa"}, false, 1, "heads", 128, "fused"}, torch::kFloat, 1e-4);
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

}  // namespace
}  // namespace hydra::model
