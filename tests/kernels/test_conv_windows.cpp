// CCQA's conv1 with its windows as conv2's operand (kernels/conv_windows.cu through
// model/conv_windows_cuda.h) against the unfused ops in float64 on the CPU (conv2_operand's own
// fallback, itself tested against the definition in tests/model/test_attention.cpp): the
// operand, and the gradients of x, the weight and the bias from a random gradient of it (bias
// columns included, which must not reach them); groups of 1 to 128 channels, with and without
// bias columns. Inputs float32 and bfloat16,
// parameters float32 and bfloat16, kernels 1-4, sequences shorter than the kernel, channels
// not a multiple of a block, many tiles a sequence (and more than 1024 tiles in all, which
// doubles the tile), x a column block of a wider tensor; groups of a multiple of 8 channels take
// the 8-channels-a-thread forward (16-byte loads of bf16 x where its rows are aligned). Then the
// pair of convolutions (conv2 on cuBLAS) on CUDA, and small cases for compute-sanitizer (no
// caching allocator: memcheck sees each output's own bounds, and an element a kernel does not
// write is uninitialised memory).
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/causal_conv_products.h"
#include "model/conv_windows_cuda.h"
#include "tests/kernels/relative_error.h"

namespace hydra::model {
namespace {

struct Case {
  int64_t B, S, C, K, g, cols;
  bool bf16, bf16_params, column_block;
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + "_S" + std::to_string(c.S) + "_C" + std::to_string(c.C) + "_K" +
         std::to_string(c.K) + "_g" + std::to_string(c.g) + "_cols" + std::to_string(c.cols) +
         (c.bf16 ? "_bf16" : "_fp32") + (c.bf16_params ? "_bf16params" : "") + (c.column_block ? "_block" : "");
}

struct Result {
  double windows, dx, dw, db;
};

Result compare(const Case& c) {
  torch::manual_seed(static_cast<uint64_t>(c.B * 1000 + c.S * 10 + c.K));
  const torch::Tensor wide = torch::randn({c.B, c.S, c.C + (c.column_block ? 40 : 0)}, torch::kDouble);
  const torch::Tensor x64 = wide.narrow(2, c.column_block ? 24 : 0, c.C);
  const torch::Tensor w64 = 0.5 * torch::randn({c.C, 1, c.K}, torch::kDouble);
  const torch::Tensor b64 = torch::randn({c.C}, torch::kDouble);
  const torch::Tensor dwin64 = torch::randn({c.C / c.g, c.B * c.S, c.g * c.K + c.cols}, torch::kDouble);
  const auto dev = torch::TensorOptions().device(torch::kCUDA);
  const auto io = dev.dtype(c.bf16 ? torch::kBFloat16 : torch::kFloat);
  const auto po = dev.dtype(c.bf16_params ? torch::kBFloat16 : torch::kFloat);
  // The device inputs are the float64 ones rounded; the reference runs on the rounded values.
  const torch::Tensor wide_d = wide.to(io);
  const torch::Tensor x = wide_d.narrow(2, c.column_block ? 24 : 0, c.C).requires_grad_(true);
  const torch::Tensor w = w64.to(po).requires_grad_(true), b = b64.to(po).requires_grad_(true);
  const torch::Tensor xr = x.detach().cpu().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor wr = w.detach().cpu().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor br = b.detach().cpu().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor ref = conv2_operand(xr, wr, br, c.g, c.cols);
  const auto ref_grads = torch::autograd::grad({ref}, {xr, wr, br}, {dwin64});

  std::optional<at::Tensor> got = conv2_operand_cuda(x, w, b, c.g, c.cols);
  EXPECT_TRUE(got.has_value());
  if (!got) return {1, 1, 1, 1};
  const auto grads = torch::autograd::grad({*got}, {x, w, b}, {dwin64.to(io)});
  return {test::rel_l2(*got, ref), test::rel_l2(grads[0], ref_grads[0]), test::rel_l2(grads[1], ref_grads[1]),
          test::rel_l2(grads[2], ref_grads[2])};
}

class ConvWindows : public ::testing::TestWithParam<Case> {};

TEST_P(ConvWindows, MatchesTheUnfusedOpsInFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  const Result r = compare(c);
  // float32: reduction order only. bfloat16: conv1's output is rounded once (as the unfused ops
  // round it), the inputs and windows' gradient are rounded on the way in, dx on the way out.
  const double tol = c.bf16 || c.bf16_params ? 1e-2 : 1e-5;
  EXPECT_LT(r.windows, tol) << name(c);
  EXPECT_LT(r.dx, tol) << name(c);
  EXPECT_LT(r.dw, tol) << name(c);
  EXPECT_LT(r.db, tol) << name(c);
  std::printf("%-40s windows %.2e dx %.2e dw %.2e db %.2e\n", name(c).c_str(), r.windows, r.dx, r.dw, r.db);
}

INSTANTIATE_TEST_SUITE_P(Sweep, ConvWindows,
                         ::testing::Values(Case{1, 1, 8, 3, 8, 8, false, false, false},
                                           Case{2, 2, 130, 3, 1, 0, false, false, false},
                                           Case{3, 129, 128, 1, 16, 8, false, false, true},
                                           Case{2, 1000, 200, 2, 40, 0, false, false, false},
                                           Case{1, 4096, 640, 3, 128, 8, false, false, false},
                                           Case{40, 1000, 64, 4, 32, 8, false, false, true},
                                           Case{2, 777, 512, 3, 128, 8, true, false, true},
                                           Case{1, 300, 128, 3, 128, 0, true, true, false},
                                           Case{4, 65, 96, 4, 96, 8, false, true, false},
                                           Case{3, 129, 256, 3, 128, 8, true, false, false}),
                         [](const auto& info) { return name(info.param); });

// Whole pair on CUDA (conv1 by the kernel, conv2 on cuBLAS) against two conv1d layers in
// float64: values and every gradient.
TEST(ConvWindowsPair, MatchesTwoConvolutionsInFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const int64_t B = 2, S = 300, C = 256, g = 128, K = 3;
  const torch::Tensor x64 = torch::randn({B, S, C}, torch::kDouble);
  const torch::Tensor w1 = 0.5 * torch::randn({C, 1, K}, torch::kDouble), b1 = torch::randn({C}, torch::kDouble);
  const torch::Tensor w2 = torch::randn({C, g, K}, torch::kDouble) / 20.0, b2 = torch::randn({C}, torch::kDouble);
  const torch::Tensor dy = torch::randn({B, S, C}, torch::kDouble);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  std::vector<torch::Tensor> in = {x64.to(f32), w1.to(f32), b1.to(f32), w2.to(f32), b2.to(f32)};
  std::vector<torch::Tensor> ref_in;
  for (auto& t : in) {
    ref_in.push_back(t.detach().cpu().to(torch::kDouble).requires_grad_(true));
    t.requires_grad_(true);
  }
  const torch::Tensor got = causal_conv_pair_products(in[0], in[1], in[2], in[3], in[4]);
  // Reference: conv1 then conv2 as conv1d, conv2's input padded with zeros.
  const auto conv = [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    const int64_t k = w.size(2), groups = w.size(0) / w.size(1);
    const torch::Tensor padded = torch::constant_pad_nd(x.transpose(1, 2), {k - 1, 0}, 0.0);
    const std::vector<int64_t> one = {1}, zero = {0};  // IntArrayRefs: plain ints are ambiguous
    return torch::conv1d(padded, w, b, one, zero, one, groups).transpose(1, 2);
  };
  const torch::Tensor ref = conv(conv(ref_in[0], ref_in[1], ref_in[2]), ref_in[3], ref_in[4]);
  EXPECT_LT(test::rel_l2(got, ref), 1e-5);
  const auto grads = torch::autograd::grad({got}, in, {dy.to(f32)});
  const auto ref_grads = torch::autograd::grad({ref}, ref_in, {dy});
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_LT(test::rel_l2(grads[i], ref_grads[i]), 1e-5) << "gradient " << i;
}

// Groups of 10 channels (a thread a channel, unaligned x) and of 128 (8 channels a thread,
// 16-byte loads and stores).
TEST(ConvWindowsSanitizer, SmallCases) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c :
       {Case{2, 37, 130, 3, 10, 8, true, false, true}, Case{2, 37, 256, 3, 128, 8, true, false, false}}) {
    const Result r = compare(c);
    EXPECT_LT(r.windows, 1e-2) << name(c);
    EXPECT_LT(r.dx, 1e-2) << name(c);
    EXPECT_LT(r.dw, 1e-2) << name(c);
    EXPECT_LT(r.db, 1e-2) << name(c);
  }
}

}  // namespace
}  // namespace hydra::model
