// The fused RMSNorm, RoPE and SwiGLU kernels (kernels/rms_norm.h, rope.h, swiglu.h) through the
// autograd Functions of model/fused_ops.h on CUDA tensors, in bf16 and float32, against the
// plain formulas in float64 (autograd) on the same rounded inputs, forward and backward, over
// many shapes: odd row lengths (vector and scalar paths), misaligned base pointers, grouped
// weights, arbitrary and large positions. Each case first asserts that the kernels run (not
// the ATen fallback). Launcher-level checks poison every output and the workspace with NaN and
// run the weight gradient twice (bitwise equal). A small case runs under compute-sanitizer.
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/rms_norm.h"
#include "model/fused_ops.h"
#include "model/fused_ops_cuda.h"
#include "tests/kernels/event_timing.h"
#include "tests/kernels/relative_error.h"

namespace hydra::model {
namespace {

constexpr double kEps = 1e-6;
const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

// ---- the plain formulas (float64, autograd, CPU) -----------------------------------------------
torch::Tensor plain_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups) {
  const int64_t n = x.size(-1);
  const torch::Tensor xv = x.reshape({-1, groups, n});
  return (xv / torch::sqrt(xv.pow(2).mean(-1, true) + kEps) * weight.reshape({groups, n})).reshape(x.sizes());
}

torch::Tensor plain_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  const int64_t D = x.size(-1), half = D / 2;
  const torch::Tensor inv_freq = torch::pow(theta, -torch::arange(half, kF64) * (2.0 / static_cast<double>(D)));
  const torch::Tensor angle = positions.to(torch::kDouble).unsqueeze(-1).unsqueeze(-1) * inv_freq;
  const torch::Tensor c = torch::cos(angle), s = torch::sin(angle);
  const torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

using hydra::test::rel_l2;

// A CUDA tensor of `dtype` holding `values` (float64, CPU), 16-byte aligned or, when
// `misaligned`, starting one element into its storage (the kernels' scalar path).
torch::Tensor on_device(const torch::Tensor& values, torch::ScalarType dtype, bool misaligned) {
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  if (!misaligned) return values.to(opts).contiguous();
  torch::Tensor flat = torch::empty({values.numel() + 1}, opts);
  torch::Tensor view = flat.narrow(0, 1, values.numel()).view(values.sizes());
  view.copy_(values.to(opts));
  return view;
}

struct Tolerance {
  double forward, backward;
};
Tolerance tolerance(torch::ScalarType dtype) {
  return dtype == torch::kBFloat16 ? Tolerance{1e-2, 2e-2} : Tolerance{2e-5, 1e-4};
}

using Fn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// inputs: float64 CPU values (the first `activations` are activations, the rest weights).
// Rounds them to dtype, runs `fused` on CUDA leaves and `plain` on float64 CPU leaves of the
// rounded values, compares outputs and the gradients of sum(out_k * up_k).
void check(const Fn& fused, const Fn& plain, const std::vector<torch::Tensor>& inputs, torch::ScalarType dtype,
           bool misaligned, const std::string& what) {
  std::vector<torch::Tensor> dev, ref;
  for (const auto& t : inputs) {
    dev.push_back(on_device(t, dtype, misaligned).requires_grad_(true));
    ref.push_back(dev.back().detach().cpu().to(torch::kDouble).requires_grad_(true));
  }
  const std::vector<torch::Tensor> y = fused(dev), y_ref = plain(ref);
  std::vector<torch::Tensor> up, up_ref;
  const Tolerance tol = tolerance(dtype);
  for (size_t k = 0; k < y.size(); ++k) {
    ASSERT_EQ(y[k].scalar_type(), dtype) << what;
    ASSERT_TRUE(y[k].is_cuda()) << what;
    EXPECT_TRUE(torch::isfinite(y[k]).all().item<bool>()) << what << ": non-finite output " << k;
    EXPECT_LT(rel_l2(y[k], y_ref[k]), tol.forward) << what << " output " << k;
    up_ref.push_back(torch::randn(y_ref[k].sizes(), kF64).to(dtype).to(torch::kDouble));
    up.push_back(up_ref.back().to(y[k].options()));
  }
  const auto g = torch::autograd::grad(y, dev, up), g_ref = torch::autograd::grad(y_ref, ref, up_ref);
  for (size_t k = 0; k < dev.size(); ++k) {
    EXPECT_TRUE(torch::isfinite(g[k]).all().item<bool>()) << what << ": non-finite gradient " << k;
    EXPECT_LT(rel_l2(g[k], g_ref[k]), tol.backward) << what << " gradient " << k;
  }
}

std::string tag(torch::ScalarType dtype, bool misaligned) {
  return std::string(dtype == torch::kBFloat16 ? " bf16" : " fp32") + (misaligned ? " misaligned" : "");
}

torch::Tensor weight_values(int64_t n) { return 1.0 + 0.3 * torch::randn({n}, kF64); }

class FusedOpsKernels : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(FusedOpsKernels, RmsNormMatchesFloat64) {
  ASSERT_TRUE(torch::cuda::is_available());
  torch::manual_seed(1);
  const auto dtype = GetParam();
  // No n = 1: there dx = rstd w dy eps / (x^2 + eps), the difference of two nearly equal
  // numbers, which fp32 resolves to a few percent (PyTorch's fp32 RMSNorm alike). The float64
  // CPU test (tests/model/test_fused_ops.cpp) covers n = 1; n = 2 keeps the shortest rows here.
  for (int64_t n : {2, 7, 64, 96, 768, 2050}) {
    for (int64_t rows : {1, 33, 300, 4099}) {
      for (bool misaligned : {false, true}) {
        const torch::Tensor x = 2.0 * torch::randn({rows, n}, kF64), w = weight_values(n);
        ASSERT_TRUE(fused_kernels_apply({on_device(x, dtype, misaligned), on_device(w, dtype, false)}));
        check([](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm(t[0], t[1], kEps)}; },
              [](const auto& t) { return std::vector<torch::Tensor>{plain_rms_norm(t[0], t[1], 1)}; }, {x, w}, dtype,
              misaligned, "rms_norm n " + std::to_string(n) + " rows " + std::to_string(rows) + tag(dtype, misaligned));
      }
    }
  }
}

TEST_P(FusedOpsKernels, HeadRmsNormMatchesFloat64) {
  torch::manual_seed(2);
  const auto dtype = GetParam();
  for (int64_t H : {1, 3, 12}) {
    for (int64_t hs : {7, 16, 64, 128}) {
      for (int64_t tokens : {1, 1000}) {
        const torch::Tensor x = torch::randn({tokens, H * hs}, kF64), w = weight_values(H * hs);
        check([hs](const auto& t) { return std::vector<torch::Tensor>{fused_head_rms_norm(t[0], t[1], hs, kEps)}; },
              [=](const auto& t) {
                return std::vector<torch::Tensor>{plain_rms_norm(t[0].view({tokens, H, hs}), t[1], H).view({tokens, -1})};
              },
              {x, w}, dtype, false, "head_rms_norm H " + std::to_string(H) + " hs " + std::to_string(hs) + tag(dtype, false));
      }
    }
  }
}

TEST_P(FusedOpsKernels, AddRmsNormMatchesFloat64) {
  torch::manual_seed(3);
  const auto dtype = GetParam();
  for (int64_t n : {7, 64, 768}) {
    for (double alpha : {1.0, 0.35}) {
      for (bool misaligned : {false, true}) {
        const torch::Tensor x = torch::randn({3, 257, n}, kF64), y = torch::randn({3, 257, n}, kF64);
        check(
            [alpha](const auto& t) {
              auto [h, nrm] = fused_add_rms_norm(t[0], t[1], alpha, t[2], kEps);
              return std::vector<torch::Tensor>{h, nrm};
            },
            [alpha](const auto& t) {
              const torch::Tensor h = t[0] + alpha * t[1];
              return std::vector<torch::Tensor>{h, plain_rms_norm(h, t[2], 1)};
            },
            {x, y, weight_values(n)}, dtype, misaligned, "add_rms_norm n " + std::to_string(n) + tag(dtype, misaligned));
      }
    }
    // x used twice, as the residual and through its norm (the add-form backward without dy).
    for (bool misaligned : {false, true}) {
      check(
          [](const auto& t) {
            auto [same, nrm] = fused_rms_norm_with_input(t[0], t[1], kEps);
            return std::vector<torch::Tensor>{same * 1.0, nrm};
          },
          [](const auto& t) { return std::vector<torch::Tensor>{t[0] * 1.0, plain_rms_norm(t[0], t[1], 1)}; },
          {torch::randn({3, 257, n}, kF64), weight_values(n)}, dtype, misaligned,
          "rms_norm_with_input n " + std::to_string(n) + tag(dtype, misaligned));
    }
  }
}

torch::Tensor random_positions(int64_t B, int64_t S) {
  torch::Tensor p = torch::randint(0, 100000, {B, S}, torch::kLong);  // unsorted, repeated, large
  p.select(1, 0).fill_(0);
  return p;
}

TEST_P(FusedOpsKernels, RopeAndRmsNormRopeMatchFloat64) {
  torch::manual_seed(4);
  const auto dtype = GetParam();
  struct Shape {
    int64_t B, S, heads, D;
  };
  for (const Shape& s : std::vector<Shape>{{1, 1, 1, 2}, {2, 129, 1, 64}, {2, 129, 12, 64}, {4, 1000, 3, 32},
                                           {1, 77, 5, 96}, {2, 50, 2, 128}, {3, 31, 4, 6}}) {
    for (bool misaligned : {false, true}) {
      const torch::Tensor x = torch::randn({s.B, s.S, s.heads, s.D}, kF64), w = weight_values(s.D);
      const torch::Tensor pos_cpu = random_positions(s.B, s.S), pos = pos_cpu.cuda();
      const std::string shape = "B" + std::to_string(s.B) + " S" + std::to_string(s.S) + " H" +
                                std::to_string(s.heads) + " D" + std::to_string(s.D) + tag(dtype, misaligned);
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rope(t[0], pos, 1e4)}; },
            [&](const auto& t) { return std::vector<torch::Tensor>{plain_rope(t[0], pos_cpu, 1e4)}; }, {x}, dtype,
            misaligned, "rope " + shape);
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm_rope(t[0], t[1], pos, 5e5, kEps)}; },
            [&](const auto& t) {
              return std::vector<torch::Tensor>{plain_rope(plain_rms_norm(t[0], t[1], 1), pos_cpu, 5e5)};
            },
            {x, w}, dtype, misaligned, "rms_norm_rope " + shape);
    }
  }
}

// MLA's [a ; RoPE(b)]: b per head or one row shared by every head (whose gradient sums the
// heads'); odd sizes take the scalar path, misaligned bases too.
TEST_P(FusedOpsKernels, RopeConcatMatchesFloat64) {
  torch::manual_seed(6);
  const auto dtype = GetParam();
  struct Shape {
    int64_t B, S, heads, d_a, D, b_heads;
  };
  for (const Shape& s : std::vector<Shape>{{1, 1, 1, 8, 2, 1},
                                           {2, 129, 12, 64, 32, 12},
                                           {2, 129, 12, 64, 32, 1},
                                           {1, 77, 5, 7, 6, 1},
                                           {3, 31, 4, 16, 8, 4},
                                           {1, 300, 3, 0, 64, 1}}) {
    for (bool misaligned : {false, true}) {
      const torch::Tensor a = torch::randn({s.B, s.S, s.heads, s.d_a}, kF64);
      const torch::Tensor b = torch::randn({s.B, s.S, s.b_heads, s.D}, kF64);
      const torch::Tensor pos_cpu = random_positions(s.B, s.S), pos = pos_cpu.cuda();
      const std::string shape = "B" + std::to_string(s.B) + " S" + std::to_string(s.S) + " H" +
                                std::to_string(s.heads) + " d_a" + std::to_string(s.d_a) + " D" + std::to_string(s.D) +
                                " b_heads" + std::to_string(s.b_heads) + tag(dtype, misaligned);
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rope_concat(t[0], t[1], pos, 1e4)}; },
            [&](const auto& t) {
              const torch::Tensor r = plain_rope(t[1], pos_cpu, 1e4).expand({s.B, s.S, s.heads, s.D});
              return std::vector<torch::Tensor>{torch::cat({t[0], r}, -1)};
            },
            {a, b}, dtype, misaligned, "rope_concat " + shape);
    }
  }
}

// The launchers write every element: outputs poisoned with NaN come back finite and equal to
// the ATen formula (the copy bit for bit).
TEST(FusedOpsLaunchers, RopeConcatWritesEveryElement) {
  torch::manual_seed(7);
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const int64_t B = 2, S = 65, H = 12, d_a = 64, D = 32;
  const torch::Tensor a = torch::randn({B, S, H, d_a}, opts), b = torch::randn({B, S, 1, D}, opts);
  const torch::Tensor pos = random_positions(B, S).cuda();
  const torch::Tensor out = rope_concat_forward_cuda(a, b, pos, 1e4);
  EXPECT_TRUE(torch::equal(out.narrow(-1, 0, d_a), a));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  const torch::Tensor dout = torch::randn({B, S, H, d_a + D}, opts);
  const auto [da, db] = rope_concat_backward_cuda(dout, d_a, 1, pos, 1e4);
  EXPECT_TRUE(torch::equal(da, dout.narrow(-1, 0, d_a)));
  EXPECT_EQ(db.sizes(), b.sizes());
  EXPECT_TRUE(torch::isfinite(db).all().item<bool>());
}

TEST_P(FusedOpsKernels, SwigluMatchesFloat64) {
  torch::manual_seed(5);
  const auto dtype = GetParam();
  for (int64_t count : {1, 7, 8, 1000, (1 << 20) + 3}) {
    for (bool misaligned : {false, true}) {
      const torch::Tensor g = 3.0 * torch::randn({count}, kF64), u = torch::randn({count}, kF64);
      check([](const auto& t) { return std::vector<torch::Tensor>{fused_swiglu(t[0], t[1])}; },
            [](const auto& t) { return std::vector<torch::Tensor>{t[0] * torch::sigmoid(t[0]) * t[1]}; }, {g, u}, dtype,
            misaligned, "swiglu count " + std::to_string(count) + tag(dtype, misaligned));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedOpsKernels, ::testing::Values(torch::kBFloat16, torch::kFloat),
                         [](const auto& info) { return info.param == torch::kBFloat16 ? "bf16" : "fp32"; });

// ---- launcher level: poisoned outputs and workspace, bitwise reproducible weight gradient -----
torch::Tensor poisoned(torch::IntArrayRef sizes, const torch::TensorOptions& o) {
  return torch::full(sizes, std::numeric_limits<double>::quiet_NaN(), o);
}

// The backward launchers with the weight gradient, against float64 autograd: dx and dweight
// poisoned beforehand, the workspace too; dweight bitwise the same on a second run. `offset`
// elements shift x, dy and dx off 16-byte alignment, which sends a groups-1 weight gradient from
// the fused pass to the separate one; both are checked, and against each other.
void check_norm_launchers(int64_t rows, int n, int groups, torch::ScalarType dtype, int64_t offset = 0) {
  const auto io = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const auto f32 = io.dtype(torch::kFloat);
  const auto shifted = [&](const torch::Tensor& t) {
    torch::Tensor buffer = torch::empty({t.numel() + offset}, io);
    torch::Tensor view = buffer.narrow(0, offset, t.numel()).view(t.sizes());
    view.copy_(t);
    return view;
  };
  const torch::Tensor x = shifted(torch::randn({rows, n}, io)), dy = shifted(torch::randn({rows, n}, io));
  const torch::Tensor w = (1.0 + 0.3 * torch::randn({groups, n}, f32)).to(dtype);
  kernels::RmsNormShape s;
  s.rows = rows;
  s.n = n;
  s.groups = groups;
  s.eps = static_cast<float>(kEps);
  s.dtype = dtype == torch::kBFloat16 ? kernels::StorageType::kBFloat16 : kernels::StorageType::kFloat32;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  torch::Tensor y = poisoned({rows, n}, io), rstd = poisoned({rows}, f32);
  kernels::rms_norm_forward(s, x.data_ptr(), w.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(), stream);
  std::vector<torch::Tensor> dxs, dws;
  for (int run = 0; run < 2; ++run) {
    const size_t bytes = kernels::rms_norm_weight_grad_workspace(s);
    torch::Tensor ws = poisoned({static_cast<int64_t>(bytes / 4 + 1)}, f32);
    torch::Tensor dw = poisoned({groups, n}, io), dx = shifted(poisoned({rows, n}, io));
    kernels::rms_norm_backward(s, x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(), dy.data_ptr(), dx.data_ptr(),
                               {dw.data_ptr(), ws.data_ptr(), bytes}, stream);
    dxs.push_back(dx);
    dws.push_back(dw);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::string what = "rows " + std::to_string(rows) + " n " + std::to_string(n) + " groups " +
                           std::to_string(groups) + tag(dtype, offset != 0);
  for (const torch::Tensor& t : {y, rstd, dxs[0], dws[0]}) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << what;
  EXPECT_TRUE(torch::equal(dws[0], dws[1])) << what << ": weight gradient not reproducible";
  EXPECT_TRUE(torch::equal(dxs[0], dxs[1])) << what << ": dx not reproducible";
  // The same quantities from the float64 formulas.
  const torch::Tensor xd = x.cpu().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor wd = w.cpu().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor yd = plain_rms_norm(xd, wd, groups);
  const auto g = torch::autograd::grad({yd}, {xd, wd}, {dy.cpu().to(torch::kDouble)});
  const Tolerance tol = tolerance(dtype);
  EXPECT_LT(rel_l2(y, yd), tol.forward) << what;
  EXPECT_LT(rel_l2(dxs[0], g[0]), tol.backward) << what;
  EXPECT_LT(rel_l2(dws[0], g[1]), tol.backward) << what;
  // dx alone (no weight gradient asked) is the same dx.
  torch::Tensor dx_alone = shifted(poisoned({rows, n}, io));
  kernels::rms_norm_backward(s, x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(), dy.data_ptr(), dx_alone.data_ptr(),
                             {}, stream);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(torch::equal(dx_alone, dxs[0])) << what << ": dx depends on whether the weight gradient is asked";
}

TEST(FusedOpsLaunchers, RmsNormPoisonedOutputsAndReproducibleWeightGradient) {
  torch::manual_seed(6);
  for (auto dtype : {torch::kBFloat16, torch::kFloat}) {
    check_norm_launchers(1, 2, 1, dtype);  // (n = 1: see RmsNormMatchesFloat64)
    for (int64_t offset : {0, 1}) {         // the fused pass and, off alignment, the separate one
      check_norm_launchers(4099, 768, 1, dtype, offset);
      check_norm_launchers(16384, 2048, 1, dtype, offset);  // 1b's width: 64 KiB of shared memory (opt-in)
      check_norm_launchers(3001, 4096, 1, dtype, offset);   // past the fused pass's shared memory: separate
      check_norm_launchers(5000, 64, 1, dtype, offset);     // MQA's per-head q/k norm: 8 lanes a row
      check_norm_launchers(777, 384, 1, dtype, offset);     // a partly used vector slot (384 = 1.5 x 256)
    }
    check_norm_launchers(12 * 333, 64, 12, dtype);
    check_norm_launchers(3 * 50, 7, 3, dtype);
    check_norm_launchers(0, 64, 1, dtype);  // no rows: a zero weight gradient, nothing else
  }
}

// For compute-sanitizer (memcheck, racecheck): every kernel once on small shapes, both
// dtypes, aligned and misaligned.
TEST(FusedOpsSanitizer, SmallCases) {
  torch::manual_seed(7);
  for (auto dtype : {torch::kBFloat16, torch::kFloat}) {
    check_norm_launchers(37, 96, 1, dtype);
    check_norm_launchers(3 * 5, 7, 3, dtype);
    for (bool misaligned : {false, true}) {
      const torch::Tensor x = torch::randn({2, 9, 3, 16}, kF64), w = weight_values(16);
      const torch::Tensor pos_cpu = random_positions(2, 9), pos = pos_cpu.cuda();
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm_rope(t[0], t[1], pos, 1e4, kEps)}; },
            [&](const auto& t) {
              return std::vector<torch::Tensor>{plain_rope(plain_rms_norm(t[0], t[1], 1), pos_cpu, 1e4)};
            },
            {x, w}, dtype, misaligned, "sanitizer rms_norm_rope" + tag(dtype, misaligned));
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rope(t[0], pos, 1e4)}; },
            [&](const auto& t) { return std::vector<torch::Tensor>{plain_rope(t[0], pos_cpu, 1e4)}; }, {x}, dtype,
            misaligned, "sanitizer rope" + tag(dtype, misaligned));
      check([&](const auto& t) { return std::vector<torch::Tensor>{fused_rope_concat(t[0], t[1], pos, 1e4)}; },
            [&](const auto& t) {
              return std::vector<torch::Tensor>{torch::cat({t[0], plain_rope(t[1], pos_cpu, 1e4).expand({2, 9, 3, 16})}, -1)};
            },
            {torch::randn({2, 9, 3, 8}, kF64), torch::randn({2, 9, 1, 16}, kF64)}, dtype, misaligned,
            "sanitizer rope_concat" + tag(dtype, misaligned));
      const torch::Tensor h = torch::randn({2, 9, 24}, kF64);
      check(
          [](const auto& t) {
            auto [hh, nrm] = fused_add_rms_norm(t[0], t[1], 0.5, t[2], kEps);
            return std::vector<torch::Tensor>{hh, nrm};
          },
          [](const auto& t) {
            const torch::Tensor hh = t[0] + 0.5 * t[1];
            return std::vector<torch::Tensor>{hh, plain_rms_norm(hh, t[2], 1)};
          },
          {h, torch::randn({2, 9, 24}, kF64), weight_values(24)}, dtype, misaligned, "sanitizer add_rms_norm" + tag(dtype, misaligned));
      check([](const auto& t) { return std::vector<torch::Tensor>{fused_swiglu(t[0], t[1])}; },
            [](const auto& t) { return std::vector<torch::Tensor>{t[0] * torch::sigmoid(t[0]) * t[1]}; },
            {torch::randn({2, 9, 24}, kF64), torch::randn({2, 9, 24}, kF64)}, dtype, misaligned,
            "sanitizer swiglu" + tag(dtype, misaligned));
    }
  }
}

// Timing (not a check): the residual add + RMSNorm, forward and backward with the weight
// gradient, at small's (16 x 1024 rows of 768) and 1b's (8 x 1024 rows of 2048) shapes, bf16.
// GB/s counts the bytes each must move (backward: h, dh, dn read, dx and dy written).
TEST(FusedOpsLaunchers, DISABLED_TimingAddRmsNorm) {
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (const auto& [rows, n] : {std::pair<int64_t, int>{16384, 768}, std::pair<int64_t, int>{8192, 2048}}) {
    kernels::RmsNormShape s;
    s.rows = rows;
    s.n = n;
    const torch::Tensor x = torch::randn({rows, n}, o), y = torch::randn({rows, n}, o), w = torch::rand({n}, o) + 0.5;
    torch::Tensor h = torch::empty_like(x), out = torch::empty_like(x), dx = torch::empty_like(x), dy = torch::empty_like(x);
    const torch::Tensor dh = torch::randn({rows, n}, o), dn = torch::randn({rows, n}, o);
    torch::Tensor rstd = torch::empty({rows}, o.dtype(torch::kFloat)), dw = torch::empty({n}, o);
    const size_t ws_bytes = kernels::rms_norm_weight_grad_workspace(s);
    torch::Tensor ws = torch::empty({static_cast<int64_t>(ws_bytes)}, o.dtype(torch::kByte));
    const float fwd = hydra::test::median_event_ms([&] {
      kernels::add_rms_norm_forward(s, x.data_ptr(), y.data_ptr(), 1.0f, w.data_ptr(), h.data_ptr(), out.data_ptr(),
                                    rstd.data_ptr<float>(), stream);
    }, 30, 3, stream);
    const float bwd = hydra::test::median_event_ms([&] {
      kernels::add_rms_norm_backward(s, h.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(), dh.data_ptr(), dn.data_ptr(),
                                     1.0f, dx.data_ptr(), dy.data_ptr(), {dw.data_ptr(), ws.data_ptr(), ws_bytes}, stream);
    }, 30, 3, stream);
    const double tensor = static_cast<double>(rows) * n * 2;
    std::printf("TIMING add_rms_norm %ldx%d: forward %.1f us (%.0f GB/s), backward+dw %.1f us (%.0f GB/s)\n",
                static_cast<long>(rows), n, fwd * 1e3, 4 * tensor / fwd / 1e6, bwd * 1e3, 5 * tensor / bwd / 1e6);
  }
}

}  // namespace
}  // namespace hydra::model
