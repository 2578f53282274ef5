// The LM head's fused cross entropy (kernels/cross_entropy.cu) against float64 formulas computed
// from the very values the kernel reads: per-row loss lse - logit[target] and the gradient
// (softmax - onehot) * scale written over the logits, for bf16 and float32, odd vocabularies
// (17, 1000, 50257: rows start at every alignment), row strides wider than the row, padding
// columns and ignored targets; outputs poisoned before each launch. Then the float32-output
// GEMM of the weight gradient, and linear_cross_entropy on CUDA (the glue) against the float64
// reference. A small case runs under compute-sanitizer (tests/kernels/CMakeLists.txt).
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/cross_entropy.h"
#include "model/linear_cross_entropy.h"
#include "tests/kernels/relative_error.h"

namespace hydra::kernels {
namespace {

constexpr int64_t kIgnore = -100;

struct Case {
  int64_t rows, vocab, vocab_valid, row_stride;
  bool bf16;
  bool gradient;  // false: the loss alone (row_scale null)
};

std::string name(const Case& c) {
  return "R" + std::to_string(c.rows) + "_V" + std::to_string(c.vocab) + "_valid" + std::to_string(c.vocab_valid) +
         "_stride" + std::to_string(c.row_stride) + (c.bf16 ? "_bf16" : "_fp32") + (c.gradient ? "" : "_lossonly");
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const bool bf16 : {true, false}) {
    out.push_back({1, 17, 17, 17, bf16, true});
    out.push_back({5, 17, 13, 17, bf16, true});        // padding columns
    out.push_back({37, 1000, 1000, 1000, bf16, true});
    out.push_back({37, 1000, 997, 1003, bf16, true});  // odd stride: every row start alignment
    out.push_back({9, 50257, 50257, 50257, bf16, true});
    out.push_back({33, 50304, 50257, 50304, bf16, true});  // the GPT-2 vocabulary padded to 128
    out.push_back({6, 50257, 50257, 50257, bf16, false});
    out.push_back({3, 5, 5, 9, bf16, true});           // fewer columns than one vector
  }
  return out;
}

// Runs the kernel on a chunk built for `c` and checks it against float64 formulas.
void check_case(const Case& c) {
  SCOPED_TRACE(name(c));
  const auto dtype = c.bf16 ? torch::kBFloat16 : torch::kFloat;
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  // Logits of a few units with one large entry per row, as a trained head produces.
  torch::Tensor storage = (torch::randn({c.rows, c.row_stride}, cuda) * 3).to(dtype);
  torch::Tensor logits = storage.narrow(1, 0, c.vocab);
  torch::Tensor targets = torch::randint(c.vocab_valid, {c.rows}, cuda.dtype(torch::kLong));
  if (c.rows > 2) targets.index_put_({torch::arange(1, c.rows, 3, cuda.dtype(torch::kLong))}, kIgnore);
  const torch::Tensor counted = targets != kIgnore;
  const torch::Tensor row_scale = counted.to(torch::kFloat) / std::max<int64_t>(1, counted.sum().item<int64_t>());
  // Float64 reference from the values as stored (bf16 rounding included).
  const torch::Tensor x = logits.to(torch::kDouble).cpu();
  const torch::Tensor t = targets.cpu(), keep = counted.cpu(), scale = row_scale.to(torch::kDouble).cpu();
  const torch::Tensor real = x.narrow(1, 0, c.vocab_valid);
  const torch::Tensor lse = torch::logsumexp(real, 1);
  const torch::Tensor picked = x.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1);
  const torch::Tensor loss_ref = torch::where(keep, lse - picked, torch::zeros_like(lse));
  torch::Tensor grad_ref = torch::zeros_like(x);
  grad_ref.narrow(1, 0, c.vocab_valid).copy_(torch::softmax(real, 1) * scale.unsqueeze(1));
  grad_ref.scatter_add_(1, t.clamp_min(0).unsqueeze(1), -scale.unsqueeze(1));

  torch::Tensor loss = torch::full({c.rows}, std::numeric_limits<float>::quiet_NaN(), cuda);  // poisoned
  const torch::Tensor before = storage.clone();
  CrossEntropyChunk chunk;
  chunk.logits = logits.data_ptr();
  chunk.rows = c.rows;
  chunk.vocab = c.vocab;
  chunk.vocab_valid = c.vocab_valid;
  chunk.row_stride = storage.stride(0);
  chunk.targets = targets.data_ptr<int64_t>();
  chunk.row_scale = c.gradient ? row_scale.data_ptr<float>() : nullptr;
  chunk.loss = loss.data_ptr<float>();
  chunk.dtype = c.bf16 ? CrossEntropyDtype::kBFloat16 : CrossEntropyDtype::kFloat32;
  cross_entropy_chunk(chunk, at::cuda::getCurrentCUDAStream());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const torch::Tensor loss_got = loss.to(torch::kDouble).cpu();
  ASSERT_TRUE(torch::isfinite(loss_got).all().item<bool>());
  // float32 statistics over up to 50k terms, fast exponentials: 1e-5 relative to the loss.
  EXPECT_LT((loss_got - loss_ref).abs().max().item<double>(), 1e-5 * (1.0 + loss_ref.abs().max().item<double>()));
  // Beyond the row, the storage is untouched.
  if (c.row_stride > c.vocab) {
    EXPECT_TRUE(torch::equal(storage.narrow(1, c.vocab, c.row_stride - c.vocab).cpu(),
                             before.narrow(1, c.vocab, c.row_stride - c.vocab).cpu()));
  }
  if (!c.gradient) {
    EXPECT_TRUE(torch::equal(storage.cpu(), before.cpu()));  // loss only: logits left as they are
    return;
  }
  const torch::Tensor g = logits.to(torch::kDouble).cpu();
  // bf16 output: one rounding (2^-9 relative) on top of float32 arithmetic.
  const double rel = c.bf16 ? 1.0 / 256 : 2e-5;
  const double floor = 1e-7 * scale.max().item<double>();
  const torch::Tensor err = (g - grad_ref).abs() - (rel * grad_ref.abs() + floor);
  EXPECT_LE(err.max().item<double>(), 0.0) << "worst gradient error " << (g - grad_ref).abs().max().item<double>();
  if (c.vocab > c.vocab_valid) {
    EXPECT_EQ(g.narrow(1, c.vocab_valid, c.vocab - c.vocab_valid).abs().max().item<double>(), 0.0);  // padding
  }
  EXPECT_EQ(g.index({keep.logical_not()}).abs().sum().item<double>(), 0.0);  // ignored rows
}

class CrossEntropyKernel : public ::testing::TestWithParam<Case> {};

TEST_P(CrossEntropyKernel, MatchesFloat64Reference) {
  torch::manual_seed(GetParam().rows * 7 + GetParam().vocab);
  check_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Sweep, CrossEntropyKernel, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return name(info.param); });

TEST(CrossEntropyKernelSanitizer, SmallCase) {
  torch::manual_seed(3);
  for (const bool bf16 : {true, false}) {
    check_case({4, 17, 15, 21, bf16, true});
    check_case({3, 1000, 1000, 1001, bf16, true});
    check_case({2, 1000, 1000, 1000, bf16, false});
  }
}

TEST(CrossEntropyWeightGradGemm, AccumulatesUnroundedProducts) {
  torch::manual_seed(4);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  for (const auto& [rows, vocab, dim] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 17, 8}, {37, 1003, 64}, {300, 50257, 96}}) {
    const torch::Tensor g = torch::randn({rows, vocab + 3}, cuda).to(torch::kBFloat16).narrow(1, 0, vocab);
    const torch::Tensor h = torch::randn({rows, dim}, cuda).to(torch::kBFloat16);
    torch::Tensor acc = torch::randn({vocab, dim}, cuda);
    const torch::Tensor ref = acc.to(torch::kDouble) + torch::mm(g.to(torch::kDouble).t(), h.to(torch::kDouble));
    accumulate_bf16_gemm_tn(at::cuda::getCurrentCUDABlasHandle(), g.data_ptr(), g.stride(0), h.data_ptr(),
                            h.stride(0), acc.data_ptr<float>(), rows, vocab, dim);
    // float32 accumulation of rows products of size ~1: error ~ sqrt(rows) 2^-24 per unit.
    EXPECT_LT((acc.to(torch::kDouble) - ref).abs().max().item<double>(), 1e-5 * std::sqrt(double(rows)) * 10)
        << rows << "x" << vocab << "x" << dim;
  }
}

// linear_cross_entropy on CUDA (glue, kernel, GEMMs) against the float64 formulas, evaluated
// at the inputs rounded to the tested dtype, so that only the arithmetic differs.
TEST(LinearCrossEntropyCuda, MatchesFloat64Reference) {
  torch::manual_seed(8);
  const int64_t N = 300, E = 64, V = 1152, valid = 1100;
  const torch::Tensor h0 = torch::randn({N, E}, torch::kDouble), w0 = torch::randn({V, E}, torch::kDouble) * 0.3;
  torch::Tensor targets = torch::randint(valid, {N}, torch::kLong);
  targets.index_put_({torch::arange(0, N, 7)}, kIgnore);
  const torch::Tensor counted = targets != kIgnore;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const bool bf16 = dtype == torch::kBFloat16;
    SCOPED_TRACE(bf16 ? "bf16" : "float32");
    torch::Tensor hr = h0.to(dtype).to(torch::kDouble).requires_grad_(true);
    torch::Tensor wr = w0.to(dtype).to(torch::kDouble).requires_grad_(true);
    const torch::Tensor logits = torch::mm(hr, wr.t()).narrow(1, 0, valid);
    const torch::Tensor per_row =
        torch::logsumexp(logits, 1) - logits.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1);
    const torch::Tensor ref = per_row.masked_select(counted).mean();
    (ref * 0.5).backward();

    torch::Tensor h = h0.to(dtype).cuda().requires_grad_(true), w = w0.to(dtype).cuda().requires_grad_(true);
    const torch::Tensor loss = model::linear_cross_entropy(h, w, targets.cuda(), valid, /*chunk_rows=*/37);
    (loss * 0.5).backward();
    EXPECT_EQ(loss.scalar_type(), torch::kFloat);
    // bf16: the logits themselves are rounded to bf16 (about 0.01 at these magnitudes).
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), bf16 ? 1e-2 : 1e-5);
    EXPECT_LT(hydra::test::rel_l2(h.grad(), hr.grad()), bf16 ? 3e-2 : 1e-5);
    EXPECT_LT(hydra::test::rel_l2(w.grad(), wr.grad()), bf16 ? 3e-2 : 1e-5);
  }
}

}  // namespace
}  // namespace hydra::kernels
