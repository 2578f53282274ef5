// CCQA steps 4-7 after the convolutions as one kernel each way (kernels/ccqa_mix.cu through
// model/ccqa_mix_cuda.h) against docs/MODEL.md's formulas written with ATen ops in float64 on
// the CPU (qk-mean, RMSNorm over d_h, the key temperature, RoPE): q, k, and the gradients of
// q0, k0, qc, kc, both norm weights and tau from random output gradients. Head sizes 64 and 128,
// groups G = 1, 3, 4, batches and positions that are not 0..S-1, the qk-mean off, bf16 inputs and
// parameters, q0 and k0 as column blocks of one wider tensor; then a small case for
// compute-sanitizer.
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/ccqa_mix_cuda.h"
#include "model/layers.h"
#include "tests/kernels/relative_error.h"

namespace hydra::model {
namespace {

constexpr double kEps = 1e-6, kTheta = 10000.0;

struct Case {
  int64_t B, S;
  int heads, kv_heads, dh;
  double gain;
  bool bf16, bf16_params;
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + "_S" + std::to_string(c.S) + "_H" + std::to_string(c.heads) + "_Hkv" +
         std::to_string(c.kv_heads) + "_dh" + std::to_string(c.dh) + (c.gain == 0 ? "_nomean" : "") +
         (c.bf16 ? "_bf16" : "_fp32") + (c.bf16_params ? "_bf16params" : "");
}

// The formulas: inputs [q0, k0, qc, kc, q_norm_w, k_norm_w, tau], positions [B, S].
std::vector<torch::Tensor> reference(const std::vector<torch::Tensor>& in, const torch::Tensor& positions,
                                     const Case& c) {
  const int64_t B = c.B, S = c.S, G = c.heads / c.kv_heads;
  const torch::Tensor q0 = in[0].view({B, S, c.kv_heads, G, c.dh}), k0 = in[1].view({B, S, c.kv_heads, 1, c.dh});
  const torch::Tensor m = 0.5 * (q0 + k0);  // per query head
  const torch::Tensor q = in[2].view({B, S, c.kv_heads, G, c.dh}) + c.gain * m;
  const torch::Tensor k = in[3].view({B, S, c.kv_heads, 1, c.dh}) + c.gain * m.mean(3, /*keepdim=*/true);
  const torch::Tensor qn = rms_norm(q.reshape({B, S, c.heads, c.dh}), in[4], kEps);
  const torch::Tensor kn = rms_norm(k.reshape({B, S, c.kv_heads, c.dh}), in[5], kEps) * in[6].exp().view({1, 1, -1, 1});
  return {apply_rope(qn, positions, kTheta), apply_rope(kn, positions, kTheta)};
}

struct Errors {
  double q, k;
  std::vector<double> grads;
};

Errors compare(const Case& c) {
  torch::manual_seed(static_cast<uint64_t>(c.B * 100 + c.S + c.dh));
  const int64_t lq = c.heads * c.dh, lk = c.kv_heads * c.dh;
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  // q0 and k0 as column blocks of one product's output, as the layer's projections give them.
  const torch::Tensor wide = torch::randn({c.B, c.S, lq + 2 * lk}, f64);
  std::vector<torch::Tensor> host = {wide.narrow(2, 0, lq), wide.narrow(2, lq, lk), torch::randn({c.B, c.S, lq}, f64),
                                     torch::randn({c.B, c.S, lk}, f64), 1.0 + 0.3 * torch::randn({c.dh}, f64),
                                     1.0 + 0.3 * torch::randn({c.dh}, f64), 0.3 * torch::randn({c.kv_heads}, f64)};
  // Positions: each sequence from its own offset (packed or continued sequences).
  const torch::Tensor positions =
      torch::arange(c.S, torch::kLong).unsqueeze(0) + 37 * torch::arange(c.B, torch::kLong).unsqueeze(1);
  const auto dev = torch::TensorOptions().device(torch::kCUDA);
  const auto io = dev.dtype(c.bf16 ? torch::kBFloat16 : torch::kFloat);
  const auto po = dev.dtype(c.bf16_params ? torch::kBFloat16 : torch::kFloat);
  const torch::Tensor wide_d = wide.to(io);
  std::vector<torch::Tensor> dev_in = {wide_d.narrow(2, 0, lq), wide_d.narrow(2, lq, lk),
                                       host[2].to(io),           host[3].to(io),
                                       host[4].to(po),           host[5].to(po),
                                       host[6].to(po)};
  std::vector<torch::Tensor> ref_in;
  for (auto& t : dev_in) {
    t = t.detach().requires_grad_(true);
    ref_in.push_back(t.detach().cpu().to(torch::kDouble).requires_grad_(true));
  }
  const std::vector<torch::Tensor> ref = reference(ref_in, positions, c);
  const CcqaMixOptions o{c.dh, c.gain, kEps, kTheta};
  const auto got = ccqa_mix_cuda(dev_in[0], dev_in[1], dev_in[2], dev_in[3], positions.to(torch::kCUDA), dev_in[4],
                                 dev_in[5], dev_in[6], o);
  EXPECT_TRUE(got.has_value());
  if (!got) return {1, 1, {}};
  const torch::Tensor gq = torch::randn(ref[0].sizes(), f64), gk = torch::randn(ref[1].sizes(), f64);
  const auto ref_grads = torch::autograd::grad(ref, ref_in, {gq, gk});
  const auto grads = torch::autograd::grad(*got, dev_in, {gq.to(io), gk.to(io)});
  Errors e{test::rel_l2((*got)[0], ref[0]), test::rel_l2((*got)[1], ref[1]), {}};
  for (size_t i = 0; i < grads.size(); ++i) {
    // Without the qk-mean, q0 and k0 get no gradient from here: zeros against zeros.
    const bool no_mean_input = c.gain == 0 && i < 2;
    e.grads.push_back(no_mean_input ? grads[i].abs().max().item<double>() : test::rel_l2(grads[i], ref_grads[i]));
  }
  return e;
}

class CcqaMix : public ::testing::TestWithParam<Case> {};

TEST_P(CcqaMix, MatchesTheFormulasInFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  const Errors e = compare(c);
  // float32: reduction order (and the angles' rounding to float32, as the reference's cos/sin);
  // bf16: every input and output rounded once.
  const double tol = c.bf16 || c.bf16_params ? 2e-2 : 1e-5;
  EXPECT_LT(e.q, tol) << name(c);
  EXPECT_LT(e.k, tol) << name(c);
  const char* what[] = {"q0", "k0", "qc", "kc", "q_norm_w", "k_norm_w", "tau"};
  for (size_t i = 0; i < e.grads.size(); ++i) EXPECT_LT(e.grads[i], tol) << name(c) << " gradient of " << what[i];
  std::printf("%-36s q %.2e k %.2e grads", name(c).c_str(), e.q, e.k);
  for (double g : e.grads) std::printf(" %.1e", g);
  std::printf("\n");
}

INSTANTIATE_TEST_SUITE_P(Sweep, CcqaMix,
                         ::testing::Values(Case{1, 1, 4, 1, 128, 0.25, false, false},
                                           Case{2, 37, 4, 1, 128, 0.25, false, false},
                                           Case{3, 129, 6, 2, 64, 0.25, false, false},
                                           Case{1, 1000, 3, 3, 128, 0.25, false, false},
                                           Case{2, 65, 8, 2, 128, 0.0, false, false},
                                           Case{1, 4096, 4, 1, 128, 0.25, true, false},
                                           Case{4, 300, 12, 4, 64, 0.25, true, true},
                                           Case{2, 129, 4, 1, 128, 0.25, false, true}),
                         [](const auto& info) { return name(info.param); });

TEST(CcqaMixSanitizer, SmallCase) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Case c{2, 19, 6, 2, 128, 0.25, true, false};
  const Errors e = compare(c);
  EXPECT_LT(e.q, 2e-2);
  EXPECT_LT(e.k, 2e-2);
  for (double g : e.grads) EXPECT_LT(g, 2e-2);
}

}  // namespace
}  // namespace hydra::model
