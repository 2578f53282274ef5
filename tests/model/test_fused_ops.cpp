// The fused ops (model/fused_ops.h) on the CPU, where they run their ATen formulas: float64
// against autograd through the plain formulas written out here (forward to 1e-12, gradients
// through torch::autograd::grad to 1e-10), over odd shapes, grouped weights, arbitrary and
// large positions and non-contiguous inputs; bfloat16 against float64 within bfloat16
// tolerance and bit for bit against layers.h's reference formulas (the same ops in the same
// types, so the model's bf16 numbers do not move).
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "model/fused_ops.h"
#include "model/layers.h"

namespace hydra::model {
namespace {

constexpr double kEps = 1e-6;
const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

// ---- the plain formulas (float64, autograd) ------------------------------------------------
// x [..., n], weight [groups, n] applied to row r % groups of x viewed [rows, n].
torch::Tensor plain_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups) {
  const int64_t n = x.size(-1);
  const torch::Tensor xv = x.reshape({-1, groups, n});
  const torch::Tensor y = xv / torch::sqrt(xv.pow(2).mean(-1, true) + kEps) * weight.reshape({groups, n});
  return y.reshape(x.sizes());
}

torch::Tensor plain_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  const int64_t D = x.size(-1), half = D / 2;
  // theta^(-2i/D) as pow computes it: at positions near 1e5 another float64 spelling (exp of a
  // log) moves the angle by ~1e-11, more than the 1e-12 the comparison allows.
  const torch::Tensor inv_freq = torch::pow(theta, -torch::arange(half, kF64) * (2.0 / static_cast<double>(D)));
  const torch::Tensor angle = positions.to(torch::kDouble).unsqueeze(-1).unsqueeze(-1) * inv_freq;
  const torch::Tensor c = torch::cos(angle), s = torch::sin(angle);
  const torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

torch::Tensor plain_swiglu(const torch::Tensor& g, const torch::Tensor& u) { return g * torch::sigmoid(g) * u; }

// ---- comparisons -----------------------------------------------------------------------------
void expect_close(const torch::Tensor& got, const torch::Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = std::max(1.0, want.abs().max().item<double>());
  const double err = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tol * scale) << what << ": max abs error " << err << " at scale " << scale;
}

double rel_l2(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  return (g - w).norm().item<double>() / std::max(w.norm().item<double>(), 1e-300);
}

// Runs fused and plain on leaf copies of the inputs, compares outputs (to 1e-12) and the
// gradients of sum(out_k * upstream_k) w.r.t. every input (to 1e-10). Inputs marked strided
// reach the ops as non-contiguous views: every other element along the last dimension of a
// leaf twice as wide.
using Fn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;
void expect_matches(const Fn& fused, const Fn& plain, const std::vector<torch::Tensor>& inputs,
                    const std::string& what, const std::vector<bool>& strided = {}) {
  auto is_strided = [&](size_t k) { return k < strided.size() && strided[k]; };
  auto leaves = [&] {
    std::vector<torch::Tensor> out;
    for (size_t k = 0; k < inputs.size(); ++k) {
      if (!is_strided(k)) {
        out.push_back(inputs[k].detach().clone().requires_grad_(true));
        continue;
      }
      std::vector<int64_t> wide(inputs[k].sizes().begin(), inputs[k].sizes().end());
      wide.back() *= 2;
      torch::Tensor leaf = torch::randn(wide, kF64);
      leaf.slice(-1, 0, wide.back(), 2).copy_(inputs[k]);
      out.push_back(leaf.requires_grad_(true));
    }
    return out;
  };
  auto views = [&](const std::vector<torch::Tensor>& ls) {
    std::vector<torch::Tensor> out;
    for (size_t k = 0; k < ls.size(); ++k) {
      out.push_back(is_strided(k) ? ls[k].slice(-1, 0, ls[k].size(-1), 2) : ls[k]);
      if (is_strided(k) && out.back().size(-1) > 1) EXPECT_FALSE(out.back().is_contiguous());
    }
    return out;
  };
  const std::vector<torch::Tensor> a = leaves(), b = leaves();
  const std::vector<torch::Tensor> ya = fused(views(a)), yb = plain(views(b));
  ASSERT_EQ(ya.size(), yb.size());
  std::vector<torch::Tensor> up;
  for (size_t k = 0; k < ya.size(); ++k) {
    expect_close(ya[k], yb[k], 1e-12, what + " output " + std::to_string(k));
    up.push_back(torch::randn(yb[k].sizes(), kF64));
  }
  const auto ga = torch::autograd::grad(ya, a, up), gb = torch::autograd::grad(yb, b, up);
  for (size_t k = 0; k < a.size(); ++k) expect_close(ga[k], gb[k], 1e-10, what + " grad " + std::to_string(k));
}

// ---- RMSNorm ---------------------------------------------------------------------------------
TEST(FusedOps, RmsNormMatchesPlainFormulaInFloat64) {
  torch::manual_seed(1);
  for (int64_t n : {1, 7, 64, 96, 768}) {
    for (int64_t rows : {1, 13, 300}) {
      for (bool strided : {false, true}) {
        const torch::Tensor x = torch::randn({rows, n}, kF64);
        const torch::Tensor w = 1.0 + 0.3 * torch::randn({n}, kF64);
        expect_matches([](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm(t[0], t[1], kEps)}; },
                       [](const auto& t) { return std::vector<torch::Tensor>{plain_rms_norm(t[0], t[1], 1)}; }, {x, w},
                       "rms_norm n " + std::to_string(n) + " rows " + std::to_string(rows) + (strided ? " strided" : ""),
                       {strided});
      }
    }
  }
}

TEST(FusedOps, GroupedAndHeadRmsNormMatchPlainFormulaInFloat64) {
  torch::manual_seed(2);
  for (int64_t H : {1, 3, 12}) {
    for (int64_t hs : {1, 7, 64}) {
      for (int64_t tokens : {1, 25}) {
        const torch::Tensor x = torch::randn({tokens, H * hs}, kF64);
        const torch::Tensor w = 1.0 + 0.3 * torch::randn({H * hs}, kF64);
        const std::string what = "H " + std::to_string(H) + " hs " + std::to_string(hs);
        expect_matches(
            [&](const auto& t) { return std::vector<torch::Tensor>{fused_head_rms_norm(t[0], t[1], hs, kEps)}; },
            [&](const auto& t) {
              return std::vector<torch::Tensor>{plain_rms_norm(t[0].view({tokens, H, hs}), t[1], H).view({tokens, -1})};
            },
            {x, w}, "head_rms_norm " + what);
        // groups = 1 over [tokens, H, hs]: the QK-norm shared by heads.
        expect_matches(
            [&](const auto& t) { return std::vector<torch::Tensor>{fused_grouped_rms_norm(t[0], t[1], 1, kEps)}; },
            [&](const auto& t) { return std::vector<torch::Tensor>{plain_rms_norm(t[0], t[1], 1)}; },
            {x.view({tokens, H, hs}), w.narrow(0, 0, hs)}, "shared norm " + what);
      }
    }
  }
}

TEST(FusedOps, AddRmsNormMatchesPlainFormulaInFloat64) {
  torch::manual_seed(3);
  for (int64_t n : {1, 7, 96, 768}) {
    for (double alpha : {1.0, 0.37}) {
      const torch::Tensor x = torch::randn({2, 150, n}, kF64), y = torch::randn({2, 150, n}, kF64);
      const torch::Tensor w = 1.0 + 0.3 * torch::randn({n}, kF64);
      expect_matches(
          [&](const auto& t) {
            auto [h, nrm] = fused_add_rms_norm(t[0], t[1], alpha, t[2], kEps);
            return std::vector<torch::Tensor>{h, nrm};
          },
          [&](const auto& t) {
            const torch::Tensor h = t[0] + alpha * t[1];
            return std::vector<torch::Tensor>{h, plain_rms_norm(h, t[2], 1)};
          },
          {x, y, w}, "add_rms_norm n " + std::to_string(n) + " alpha " + std::to_string(alpha), {false, true});
    }
  }
}

// x and its norm from one node: the gradient reaching x is the returned x's gradient plus the
// norm's, as when x is used twice (plain: x itself, and rms_norm(x)).
TEST(FusedOps, RmsNormWithInputMatchesUsingTheInputTwice) {
  torch::manual_seed(8);
  for (int64_t n : {1, 7, 96, 768}) {
    const torch::Tensor x = torch::randn({2, 150, n}, kF64), w = 1.0 + 0.3 * torch::randn({n}, kF64);
    expect_matches(
        [&](const auto& t) {
          auto [same, nrm] = fused_rms_norm_with_input(t[0], t[1], kEps);
          return std::vector<torch::Tensor>{same, nrm};
        },
        [&](const auto& t) { return std::vector<torch::Tensor>{t[0] * 1.0, plain_rms_norm(t[0], t[1], 1)}; }, {x, w},
        "rms_norm_with_input n " + std::to_string(n), {true, false});
  }
}

TEST(FusedOps, RmsNormWithoutWeightGradientSkipsIt) {
  const torch::Tensor x = torch::randn({5, 8}, kF64).requires_grad_(true);
  const torch::Tensor w = torch::ones({8}, kF64);  // no grad: the backward must not need one
  fused_rms_norm(x, w, kEps).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(FusedOps, RmsNormRejectsWrongWeight) {
  EXPECT_ANY_THROW(fused_rms_norm(torch::randn({4, 8}), torch::ones({7}), kEps));
  EXPECT_ANY_THROW(fused_grouped_rms_norm(torch::randn({5, 8}), torch::ones({16}), 2, kEps));  // 5 rows, 2 groups
}

// ---- RoPE ------------------------------------------------------------------------------------
torch::Tensor random_positions(int64_t B, int64_t S) {
  // Arbitrary, unsorted, repeated, and large (angles up to ~1e5 radians at i = 0).
  torch::Tensor p = torch::randint(0, 100000, {B, S}, torch::kLong);
  p.select(1, 0).fill_(0);
  if (S > 1) p.select(1, 1).fill_(99999);
  return p;
}

TEST(FusedOps, RopeMatchesPlainFormulaInFloat64) {
  torch::manual_seed(4);
  for (int64_t D : {2, 8, 64, 96}) {
    for (int64_t heads : {1, 3}) {
      for (bool strided : {false, true}) {
        const int64_t B = 2, S = 37;
        const torch::Tensor x = torch::randn({B, S, heads, D}, kF64);
        const torch::Tensor pos = random_positions(B, S);
        for (double theta : {10000.0, 500000.0}) {
          expect_matches([&](const auto& t) { return std::vector<torch::Tensor>{fused_rope(t[0], pos, theta)}; },
                         [&](const auto& t) { return std::vector<torch::Tensor>{plain_rope(t[0], pos, theta)}; }, {x},
                         "rope D " + std::to_string(D) + " heads " + std::to_string(heads) + (strided ? " strided" : ""),
                         {strided});
        }
      }
    }
  }
}

TEST(FusedOps, RmsNormRopeMatchesPlainFormulaInFloat64) {
  torch::manual_seed(5);
  for (int64_t D : {2, 8, 64}) {
    for (int64_t heads : {1, 4}) {
      const int64_t B = 3, S = 29;
      const torch::Tensor x = torch::randn({B, S, heads, D}, kF64);
      const torch::Tensor w = 1.0 + 0.3 * torch::randn({D}, kF64);
      const torch::Tensor pos = random_positions(B, S);
      expect_matches(
          [&](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm_rope(t[0], t[1], pos, 10000.0, kEps)}; },
          [&](const auto& t) { return std::vector<torch::Tensor>{plain_rope(plain_rms_norm(t[0], t[1], 1), pos, 10000.0)}; },
          {x, w}, "rms_norm_rope D " + std::to_string(D) + " heads " + std::to_string(heads), {heads == 4});
    }
  }
}

TEST(FusedOps, RopeConcatMatchesPlainFormulaInFloat64) {
  torch::manual_seed(8);
  for (int64_t b_heads : {3, 1}) {
    for (bool strided : {false, true}) {
      const int64_t B = 2, S = 23, H = 3, d_a = 10, D = 8;
      const torch::Tensor a = torch::randn({B, S, H, d_a}, kF64), b = torch::randn({B, S, b_heads, D}, kF64);
      const torch::Tensor pos = random_positions(B, S);
      expect_matches(
          [&](const auto& t) { return std::vector<torch::Tensor>{fused_rope_concat(t[0], t[1], pos, 1e4)}; },
          [&](const auto& t) {
            return std::vector<torch::Tensor>{torch::cat({t[0], plain_rope(t[1], pos, 1e4).expand({B, S, H, D})}, -1)};
          },
          {a, b}, "rope_concat b_heads " + std::to_string(b_heads) + (strided ? " strided" : ""), {strided, strided});
    }
  }
  // Heads that are neither a's nor 1, and positions of another shape, are refused.
  EXPECT_ANY_THROW(fused_rope_concat(torch::randn({2, 3, 4, 6}), torch::randn({2, 3, 2, 8}),
                                     torch::zeros({2, 3}, torch::kLong), 1e4));
  EXPECT_ANY_THROW(fused_rope_concat(torch::randn({2, 3, 4, 6}), torch::randn({2, 3, 1, 8}),
                                     torch::zeros({2, 4}, torch::kLong), 1e4));
}

TEST(FusedOps, RopeRejectsBadShapes) {
  EXPECT_ANY_THROW(fused_rope(torch::randn({2, 3, 1, 7}), torch::zeros({2, 3}, torch::kLong), 1e4));  // odd D
  EXPECT_ANY_THROW(fused_rope(torch::randn({2, 3, 1, 8}), torch::zeros({2, 4}, torch::kLong), 1e4));  // positions
}

// ---- SwiGLU ----------------------------------------------------------------------------------
TEST(FusedOps, SwigluMatchesPlainFormulaInFloat64) {
  torch::manual_seed(6);
  for (int64_t n : {1, 7, 64, 1000}) {
    const torch::Tensor g = 3.0 * torch::randn({3, n}, kF64), u = torch::randn({3, n}, kF64);
    expect_matches([](const auto& t) { return std::vector<torch::Tensor>{fused_swiglu(t[0], t[1])}; },
                   [](const auto& t) { return std::vector<torch::Tensor>{plain_swiglu(t[0], t[1])}; }, {g, u},
                   "swiglu n " + std::to_string(n), {false, true});
  }
}

// ---- bfloat16 --------------------------------------------------------------------------------
// Each op in bf16 (inputs and weights) against float64 on the same (bf16-representable) values,
// forward and gradients; and the forward bit for bit against the reference formula in bf16.
struct Bf16Case {
  std::string name;
  std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)> fused, reference;
  std::vector<torch::Tensor> inputs;  // float64, rounded to bf16 values
};

std::vector<Bf16Case> bf16_cases() {
  const auto round = [](const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kDouble); };
  const int64_t B = 2, S = 33, H = 3, D = 64, n = 96;
  const torch::Tensor pos = random_positions(B, S);
  std::vector<Bf16Case> cases;
  cases.push_back({"rms_norm", [](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm(t[0], t[1], kEps)}; },
                   [](const auto& t) { return std::vector<torch::Tensor>{rms_norm(t[0], t[1], kEps)}; },
                   {round(torch::randn({B, S, n}, kF64)), round(1.0 + 0.3 * torch::randn({n}, kF64))}});
  cases.push_back({"head_rms_norm",
                   [](const auto& t) { return std::vector<torch::Tensor>{fused_head_rms_norm(t[0], t[1], 32, kEps)}; },
                   [](const auto& t) { return std::vector<torch::Tensor>{head_rms_norm(t[0], t[1], 32, kEps)}; },
                   {round(torch::randn({B, S, 4 * 32}, kF64)), round(1.0 + 0.3 * torch::randn({4 * 32}, kF64))}});
  cases.push_back({"add_rms_norm",
                   [](const auto& t) {
                     auto [h, nrm] = fused_add_rms_norm(t[0], t[1], 0.7, t[2], kEps);
                     return std::vector<torch::Tensor>{h, nrm};
                   },
                   [](const auto& t) {
                     const torch::Tensor h = t[0] + 0.7 * t[1];
                     return std::vector<torch::Tensor>{h, rms_norm(h, t[2], kEps)};
                   },
                   {round(torch::randn({B, S, n}, kF64)), round(torch::randn({B, S, n}, kF64)),
                    round(1.0 + 0.3 * torch::randn({n}, kF64))}});
  cases.push_back({"rms_norm_with_input",
                   [](const auto& t) {
                     auto [same, nrm] = fused_rms_norm_with_input(t[0], t[1], kEps);
                     return std::vector<torch::Tensor>{same, nrm};
                   },
                   [](const auto& t) { return std::vector<torch::Tensor>{t[0].view_as(t[0]), rms_norm(t[0], t[1], kEps)}; },
                   {round(torch::randn({B, S, n}, kF64)), round(1.0 + 0.3 * torch::randn({n}, kF64))}});
  cases.push_back({"rope", [pos](const auto& t) { return std::vector<torch::Tensor>{fused_rope(t[0], pos, 1e4)}; },
                   [pos](const auto& t) { return std::vector<torch::Tensor>{apply_rope(t[0], pos, 1e4)}; },
                   {round(torch::randn({B, S, H, D}, kF64))}});
  cases.push_back(
      {"rms_norm_rope",
       [pos](const auto& t) { return std::vector<torch::Tensor>{fused_rms_norm_rope(t[0], t[1], pos, 1e4, kEps)}; },
       [pos](const auto& t) { return std::vector<torch::Tensor>{apply_rope(rms_norm(t[0], t[1], kEps), pos, 1e4)}; },
       {round(torch::randn({B, S, H, D}, kF64)), round(1.0 + 0.3 * torch::randn({D}, kF64))}});
  cases.push_back({"swiglu", [](const auto& t) { return std::vector<torch::Tensor>{fused_swiglu(t[0], t[1])}; },
                   [](const auto& t) { return std::vector<torch::Tensor>{torch::silu(t[0]) * t[1]}; },
                   {round(2.0 * torch::randn({B, S, n}, kF64)), round(torch::randn({B, S, n}, kF64))}});
  return cases;
}

TEST(FusedOps, Bfloat16MatchesFloat64AndTheReferenceFormulas) {
  torch::manual_seed(7);
  for (const Bf16Case& c : bf16_cases()) {
    std::vector<torch::Tensor> lo, hi;
    for (const auto& t : c.inputs) {
      lo.push_back(t.to(torch::kBFloat16).requires_grad_(true));
      hi.push_back(t.clone().requires_grad_(true));
    }
    const auto y_lo = c.fused(lo), y_hi = c.reference(hi), y_ref = c.reference(lo);
    std::vector<torch::Tensor> up_lo, up_hi;
    for (size_t k = 0; k < y_hi.size(); ++k) {
      EXPECT_EQ(y_lo[k].scalar_type(), torch::kBFloat16) << c.name;
      EXPECT_LT(rel_l2(y_lo[k], y_hi[k]), 1e-2) << c.name << " output " << k;
      // The same ATen ops in the same types as the reference: the same bits.
      EXPECT_TRUE(torch::equal(y_lo[k], y_ref[k])) << c.name << " output " << k << " differs from the reference";
      up_hi.push_back(torch::randn(y_hi[k].sizes(), kF64).to(torch::kBFloat16).to(torch::kDouble));
      up_lo.push_back(up_hi.back().to(torch::kBFloat16));
    }
    const auto g_lo = torch::autograd::grad(y_lo, lo, up_lo), g_hi = torch::autograd::grad(y_hi, hi, up_hi);
    for (size_t k = 0; k < lo.size(); ++k) {
      EXPECT_EQ(g_lo[k].scalar_type(), torch::kBFloat16) << c.name;
      EXPECT_LT(rel_l2(g_lo[k], g_hi[k]), 2e-2) << c.name << " grad " << k;
    }
  }
}

// One node per op: what the host-bound step is about.
TEST(FusedOps, EachOpIsOneAutogradNode) {
  const torch::Tensor x = torch::randn({2, 3, 2, 8}).requires_grad_(true), w = torch::ones({8}).requires_grad_(true);
  const torch::Tensor pos = torch::zeros({2, 3}, torch::kLong);
  for (const torch::Tensor& y : {fused_rms_norm(x, w, kEps), fused_rope(x, pos, 1e4), fused_rms_norm_rope(x, w, pos, 1e4, kEps),
                                 fused_swiglu(x, x)}) {
    ASSERT_TRUE(y.grad_fn());
    for (const auto& edge : y.grad_fn()->next_edges()) {
      if (edge.function) EXPECT_NE(edge.function->name().find("AccumulateGrad"), std::string::npos) << y.grad_fn()->name();
    }
  }
}

}  // namespace
}  // namespace hydra::model
