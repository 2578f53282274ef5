// Latent flash attention (kernels/latent_attention.cu) against the matmul + softmax reference
// in float64, on fresh random inputs, with every output poisoned (NaN) before the kernels run;
// then the autograd wrapper and the CCQA layer with kernel: fused against kernel: reference.
#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/latent_attention.h"
#include "model/attention.h"
#include "model/attention_core.h"
#include "model/attention_fused.h"
#include "tests/kernels/event_timing.h"
#include "tests/kernels/relative_error.h"

namespace hydra::kernels {
namespace {

struct Case {
  int batch, seq, heads, kv_heads, dim;
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.batch) + " S" + std::to_string(c.seq) + " H" + std::to_string(c.heads) + " Hkv" +
         std::to_string(c.kv_heads) + " D" + std::to_string(c.dim);
}

// Every sequence length, head size and grouping; batch and KV heads vary along the way.
std::vector<Case> sweep() {
  std::vector<Case> cases;
  int i = 0;
  for (int seq : {1, 7, 129, 1000, 4096}) {
    for (int dim : {16, 32, 64}) {
      for (int group : {1, 3, 4, 7}) {
        const int kv = 1 + i % 2;
        const int batch = seq >= 4096 ? 1 + i % 2 : 1 + (i * 3) % 8;
        cases.push_back({batch, seq, group * kv, kv, dim});
        ++i;
      }
    }
  }
  return cases;
}

using hydra::test::rel_l2;

// As rel_l2, but against `scale` where the reference is exactly zero (S = 1: one key, so the
// softmax is constant and dq = dk = 0; the kernels leave bf16 rounding there).
double grad_error(const torch::Tensor& got, const torch::Tensor& ref, const torch::Tensor& scale) {
  const double ref_norm = ref.norm().item<double>();
  const double diff = (got.to(torch::kDouble) - ref).norm().item<double>();
  return ref_norm > 0 ? diff / ref_norm : diff / scale.to(torch::kDouble).norm().item<double>();
}

BshdConst cview(const torch::Tensor& x) {
  return {reinterpret_cast<const __nv_bfloat16*>(x.data_ptr<at::BFloat16>()), x.stride(0), x.stride(1), x.stride(2)};
}
BshdMut mview(torch::Tensor& x) {
  return {reinterpret_cast<__nv_bfloat16*>(x.data_ptr<at::BFloat16>()), x.stride(0), x.stride(1), x.stride(2)};
}

torch::Tensor poisoned_like(const torch::Tensor& x) { return torch::full_like(x, std::nan("")); }

// q, k, v and an output gradient of case c, bf16 on the GPU, from the current seed. Queries a
// little larger than unit scale so that some rows are peaked, not flat.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> random_inputs(const Case& c) {
  const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::Tensor q = (1.5 * torch::randn({c.batch, c.seq, c.heads, c.dim}, bf)).to(torch::kBFloat16);
  torch::Tensor k = torch::randn({c.batch, c.seq, c.kv_heads, c.dim}, bf);
  torch::Tensor v = torch::randn({c.batch, c.seq, c.kv_heads, c.dim}, bf);
  torch::Tensor dout = torch::randn({c.batch, c.seq, c.heads, c.dim}, bf);
  return {q, k, v, dout};
}

// Every kernel variant worth checking for case c: rows per warp (0 = the default) without a head
// split, then every head split of the group (by default rows, and by two rows a warp where built),
// then the forward and the backward on warpgroup MMAs, and the forward with its registers left to
// the compiler, capped for 5 and 6 resident blocks, and with part of its exponentials on the FMA
// pipes.
std::vector<LatentAttentionVariant> variants_of(const Case& c) {
  std::vector<LatentAttentionVariant> out;
  for (const int mtiles : {0, 1, 2}) out.push_back({mtiles, mtiles, false, 1});
  const int group = c.heads / c.kv_heads;
  for (int split = 2; split <= group; ++split) {
    if (group % split) continue;
    out.push_back({0, 0, false, split});
    if (c.dim != 64) out.push_back({2, 2, false, split});
  }
  out.push_back({0, 0, false, 0});        // the split the launcher picks
  out.push_back({0, 0, false, 0, true});         // the forward on warpgroup MMAs
  out.push_back({0, 0, false, 0, false, true});  // the backward on warpgroup MMAs
  if (c.dim <= 32) {
    for (const int min_blocks : {-1, 5, 6}) out.push_back({0, 0, false, 0, false, false, min_blocks});
    // An eighth and a quarter of the forward's exponentials on the FMA pipes.
    for (const int poly : {1, 2}) out.push_back({0, 0, false, 1, false, false, 0, poly});
  }
  return out;
}

std::string variant_name(const LatentAttentionVariant& v) {
  return " mtiles " + std::to_string(v.bwd_mtiles) + " head split " + std::to_string(v.bwd_head_split) +
         (v.wgmma_forward ? " wgmma forward" : "") + (v.wgmma_backward ? " wgmma backward" : "") +
         (v.fwd_min_blocks ? " min blocks " + std::to_string(v.fwd_min_blocks) : "") +
         (v.fwd_poly_exp ? " poly exp " + std::to_string(v.fwd_poly_exp) : "");
}

// The launchers' outputs for one variant, queued on the current stream (the caller synchronises):
// every output poisoned (NaN) before the kernels run and the workspace filled with 0xff bytes
// (NaN floats), so an element they leave unwritten shows up.
struct KernelOutputs {
  torch::Tensor out, lse, dq, dk, dv;
};

KernelOutputs run_kernels(const LatentAttentionShape& shape, double scale, const torch::Tensor& q, const torch::Tensor& k,
                          const torch::Tensor& v, const torch::Tensor& dout, const LatentAttentionVariant& variant) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  KernelOutputs r;
  r.out = poisoned_like(q);
  r.lse = torch::full({shape.batch, shape.heads, shape.seq}, std::nan(""), q.options().dtype(torch::kFloat));
  latent_attention_forward(shape, static_cast<float>(scale), cview(q), cview(k), cview(v), mview(r.out),
                           r.lse.data_ptr<float>(), stream, variant);
  r.dq = poisoned_like(q), r.dk = poisoned_like(k), r.dv = poisoned_like(v);
  torch::Tensor ws = torch::full({static_cast<int64_t>(latent_attention_backward_workspace(shape, variant))}, 255,
                                 q.options().dtype(torch::kByte));
  latent_attention_backward(shape, static_cast<float>(scale), cview(q), cview(k), cview(v), cview(r.out), cview(dout),
                            r.lse.data_ptr<float>(), mview(r.dq), mview(r.dk), mview(r.dv), ws.data_ptr(), ws.numel(),
                            stream, variant);
  return r;
}

class LatentAttention : public ::testing::TestWithParam<Case> {};

// The launchers directly: forward outputs and dq, dk, dv within 1e-2 relative L2 of float64.
TEST_P(LatentAttention, MatchesFloat64Reference) {
  const Case c = GetParam();
  torch::manual_seed(1000 + c.seq * 7 + c.dim * 3 + c.heads);
  const auto [q, k, v, dout] = random_inputs(c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
  const LatentAttentionShape shape{c.batch, c.seq, c.heads, c.kv_heads, c.dim};

  torch::Tensor qd = q.to(torch::kDouble).requires_grad_(), kd = k.to(torch::kDouble).requires_grad_(),
                vd = v.to(torch::kDouble).requires_grad_();
  const torch::Tensor ref = model::causal_attention_reference(qd, kd, vd, scale);
  ref.backward(dout.to(torch::kDouble));
  // lse against log-sum-exp of the float64 scores, with the causal mask.
  const torch::Tensor scores =
      torch::einsum("bihd,bjhd->bhij", {qd.detach(), kd.detach().repeat_interleave(c.heads / c.kv_heads, 2)}) * scale;
  const torch::Tensor lse_ref =
      scores.masked_fill(torch::ones({c.seq, c.seq}, scores.options().dtype(torch::kBool)).triu(1), -INFINITY)
          .logsumexp(-1);

  // Every kernel variant on the same inputs.
  for (const LatentAttentionVariant& variant : variants_of(c)) {
    const auto [out, lse, dq, dk, dv] = run_kernels(shape, scale, q, k, v, dout, variant);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::string what = name(c) + variant_name(variant);
    for (const auto& [label, t] : {std::pair{"out", out}, {"dq", dq}, {"dk", dk}, {"dv", dv}, {"lse", lse}}) {
      ASSERT_TRUE(torch::isfinite(t).all().item<bool>()) << what << ": " << label << " has unwritten or non-finite elements";
    }
    const double e_out = rel_l2(out, ref.detach()), e_lse = rel_l2(lse, lse_ref);
    const double e_dq = grad_error(dq, qd.grad(), vd.grad()), e_dk = grad_error(dk, kd.grad(), vd.grad()),
                 e_dv = rel_l2(dv, vd.grad());
    std::printf("%s: rel L2 out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", what.c_str(), e_out, e_lse, e_dq, e_dk, e_dv);
    const double tol = 1e-2;
    EXPECT_LT(e_out, tol) << what;
    EXPECT_LT(e_lse, 1e-3) << what;
    EXPECT_LT(e_dq, tol) << what;
    EXPECT_LT(e_dk, tol) << what;
    EXPECT_LT(e_dv, tol) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Sweep, LatentAttention, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return "B" + std::to_string(c.batch) + "_S" + std::to_string(c.seq) + "_H" +
                                  std::to_string(c.heads) + "_Hkv" + std::to_string(c.kv_heads) + "_D" +
                                  std::to_string(c.dim);
                         });

// CCQA's value shift read by the kernels (LatentAttentionShape::value_shift): v unshifted in,
// out and the gradients against the float64 reference over shift_values(v), dv being the
// gradient of the unshifted v (so the shift's transpose, the last token's zero second half and
// the first token's dropped one are checked), every variant (variants_of); dv poisoned first, so an
// element the shifted writes miss shows up as NaN.
void check_value_shift(const Case& c) {
  torch::manual_seed(77 + c.seq + c.dim);
  const auto [q, k, v, dout] = random_inputs(c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
  LatentAttentionShape shape{c.batch, c.seq, c.heads, c.kv_heads, c.dim};
  shape.value_shift = true;
  torch::Tensor qd = q.to(torch::kDouble).requires_grad_(), kd = k.to(torch::kDouble).requires_grad_(),
                vd = v.to(torch::kDouble).requires_grad_();
  const torch::Tensor ref = model::causal_attention_reference(qd, kd, model::shift_values(vd), scale);
  ref.backward(dout.to(torch::kDouble));
  for (const LatentAttentionVariant& variant : variants_of(c)) {
    const auto [out, lse, dq, dk, dv] = run_kernels(shape, scale, q, k, v, dout, variant);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::string what = name(c) + variant_name(variant);
    for (const auto& [label, t] : {std::pair{"out", out}, {"dq", dq}, {"dk", dk}, {"dv", dv}}) {
      ASSERT_TRUE(torch::isfinite(t).all().item<bool>()) << what << ": " << label << " has unwritten elements";
    }
    EXPECT_LT(rel_l2(out, ref.detach()), 1e-2) << what;
    EXPECT_LT(grad_error(dq, qd.grad(), vd.grad()), 1e-2) << what;
    EXPECT_LT(grad_error(dk, kd.grad(), vd.grad()), 1e-2) << what;
    EXPECT_LT(rel_l2(dv, vd.grad()), 1e-2) << what;
    // The last token's second half reaches no query: its gradient is exactly 0.
    EXPECT_EQ(dv.narrow(1, c.seq - 1, 1).narrow(3, c.dim / 2, c.dim / 2).abs().max().item<float>(), 0.f) << what;
  }
}

TEST(LatentAttentionValueShift, MatchesShiftedFloat64Reference) {
  for (const Case& c : std::vector<Case>{{2, 1, 4, 1, 16}, {3, 7, 6, 2, 16}, {2, 129, 4, 1, 32},
                                         {1, 1000, 12, 3, 16}, {2, 200, 8, 2, 64}, {1, 4096, 16, 4, 32}}) {
    check_value_shift(c);
  }
}

// Small cases for compute-sanitizer (tests/kernels/CMakeLists.txt): the shifted reads and
// writes stay inside their tensors.
TEST(LatentAttentionValueShift, SanitizerCase) {
  for (const Case& c : std::vector<Case>{{2, 70, 4, 2, 16}, {1, 65, 2, 1, 32}}) check_value_shift(c);
}

// The launcher's head split: an asked split is kept, one that does not divide the group is
// refused, and the default splits a grid too small for the GPU (one sequence of 4096 at 1b's
// latent shape: a key tile 0 block walks 64 query tiles of 4 heads, 256 steps, while the GPU's
// block slots get about 63 each on an H200) but not one that fills it (small at batch 64).
TEST(LatentAttentionHeadSplit, DefaultSplitsOnlyGridsTooSmallForTheGpu) {
  const LatentAttentionShape one_long{1, 4096, 16, 4, 32}, many_short{64, 1024, 12, 3, 16};
  LatentAttentionVariant asked;
  asked.bwd_head_split = 2;
  EXPECT_EQ(latent_attention_backward_head_split(one_long, asked), 2);
  asked.bwd_head_split = 3;
  EXPECT_THROW(latent_attention_backward_head_split(one_long, asked), std::exception);
  const int split = latent_attention_backward_head_split(one_long);
  EXPECT_GT(split, 1);
  EXPECT_EQ(4 % split, 0);
  EXPECT_EQ(latent_attention_backward_head_split(many_short), 1);
  // The workspace grows by the slices' fp32 dk and dv partials, and only under a split.
  asked.bwd_head_split = 1;
  const size_t whole = latent_attention_backward_workspace(one_long, asked);
  asked.bwd_head_split = 4;
  EXPECT_EQ(latent_attention_backward_workspace(one_long, asked), whole + 2 * 4 * size_t{4096} * 4 * 32 * sizeof(float));
  EXPECT_EQ(latent_attention_backward_workspace(many_short), latent_attention_backward_workspace(many_short, {0, 0, false, 1}));
}

// A workspace smaller than the variant needs is refused before anything runs.
TEST(LatentAttentionHeadSplit, SmallWorkspaceIsRefused) {
  const Case c{1, 256, 4, 1, 16};
  const auto [q, k, v, dout] = random_inputs(c);
  const LatentAttentionShape shape{c.batch, c.seq, c.heads, c.kv_heads, c.dim};
  const LatentAttentionVariant split4{0, 0, false, 4};
  torch::Tensor out = torch::empty_like(q), dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  torch::Tensor lse = torch::empty({c.batch, c.heads, c.seq}, q.options().dtype(torch::kFloat));
  torch::Tensor ws = torch::empty({static_cast<int64_t>(latent_attention_backward_workspace(shape, {0, 0, false, 1}))},
                                  q.options().dtype(torch::kByte));
  EXPECT_THROW(latent_attention_backward(shape, 0.25f, cview(q), cview(k), cview(v), cview(out), cview(dout),
                                         lse.data_ptr<float>(), mview(dq), mview(dk), mview(dv), ws.data_ptr(), ws.numel(),
                                         at::cuda::getCurrentCUDAStream(), split4),
               std::exception);
}

// Strided (non-contiguous) views as the CCQA layer produces them: q, k, v as slices of one
// packed tensor, through the launchers.
TEST(LatentAttentionStrides, PackedQkvSlices) {
  const int B = 2, S = 200, H = 6, Hkv = 2, D = 32;
  const auto bf = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor packed = torch::randn({B, S, H + 2 * Hkv, D}, bf);
  const torch::Tensor q = packed.narrow(2, 0, H), k = packed.narrow(2, H, Hkv), v = packed.narrow(2, H + Hkv, Hkv);
  const double scale = 0.2;
  torch::Tensor out = torch::full({B, S, H, D}, std::nan(""), bf);
  torch::Tensor lse = torch::empty({B, H, S}, bf.dtype(torch::kFloat));
  latent_attention_forward({B, S, H, Hkv, D}, static_cast<float>(scale), cview(q), cview(k), cview(v), mview(out),
                           lse.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  const torch::Tensor ref =
      model::causal_attention_reference(q.to(torch::kDouble), k.to(torch::kDouble), v.to(torch::kDouble), scale);
  EXPECT_LT(rel_l2(out, ref), 1e-2);
}

// The autograd wrapper: bf16 leaves, and fp32 leaves under autocast (cast inside, gradients
// flow back to fp32).
TEST(LatentAttentionAutograd, GradientsThroughTheFunction) {
  const int B = 3, S = 300, H = 8, Hkv = 2, D = 16;
  for (const bool autocast : {false, true}) {
    const auto dtype = autocast ? torch::kFloat : torch::kBFloat16;
    const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
    torch::Tensor q = torch::randn({B, S, H, D}, o).requires_grad_(), k = torch::randn({B, S, Hkv, D}, o).requires_grad_(),
                  v = torch::randn({B, S, Hkv, D}, o).requires_grad_();
    const torch::Tensor dout = torch::randn({B, S, H, D}, o);
    ASSERT_TRUE(autocast || model::fused_attention_applies(q, k, v));
    at::autocast::set_autocast_enabled(at::kCUDA, autocast);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    ASSERT_TRUE(model::fused_attention_applies(q, k, v));
    const torch::Tensor out = model::causal_attention_fused(q, k, v, 0.25);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    out.backward(dout.to(out.scalar_type()));
    torch::Tensor qd = q.detach().to(torch::kDouble).requires_grad_(), kd = k.detach().to(torch::kDouble).requires_grad_(),
                  vd = v.detach().to(torch::kDouble).requires_grad_();
    const torch::Tensor ref = model::causal_attention_reference(qd, kd, vd, 0.25);
    ref.backward(dout.to(torch::kDouble));
    EXPECT_EQ(q.grad().scalar_type(), dtype);
    // fp32 leaves cast to bf16 inside: the bf16 rounding of the inputs bounds the agreement.
    const double tol = 1.5e-2;
    EXPECT_LT(rel_l2(out.detach(), ref.detach()), tol) << "autocast " << autocast;
    EXPECT_LT(rel_l2(q.grad(), qd.grad()), tol) << "autocast " << autocast;
    EXPECT_LT(rel_l2(k.grad(), kd.grad()), tol) << "autocast " << autocast;
    EXPECT_LT(rel_l2(v.grad(), vd.grad()), tol) << "autocast " << autocast;
  }
}

// The two block orders (LatentAttentionVariant::tiles_inner) compute the same blocks: the
// forward and dk, dv come out bitwise equal (dq sums key tiles with atomics, in either order:
// close, not bitwise). Then their times, at small's CCQA shape (d_h 16) and 1b's (d_h 32), for
// docs/PERF.md (not a check; run with --gtest_also_run_disabled_tests).
struct OrderRun {
  torch::Tensor out, lse, dq, dk, dv;
  float fwd_ms = 0, bwd_ms = 0;
};

OrderRun run_order(const Case& c, bool tiles_inner, int repeats) {
  torch::manual_seed(11);
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor q = torch::randn({c.batch, c.seq, c.heads, c.dim}, o);
  const torch::Tensor k = torch::randn({c.batch, c.seq, c.kv_heads, c.dim}, o);
  const torch::Tensor v = torch::randn({c.batch, c.seq, c.kv_heads, c.dim}, o);
  const torch::Tensor dout = torch::randn({c.batch, c.seq, c.heads, c.dim}, o);
  OrderRun r;
  r.out = torch::empty_like(q), r.dq = torch::empty_like(q), r.dk = torch::empty_like(k), r.dv = torch::empty_like(v);
  r.lse = torch::empty({c.batch, c.heads, c.seq}, o.dtype(torch::kFloat));
  const LatentAttentionShape shape{c.batch, c.seq, c.heads, c.kv_heads, c.dim};
  LatentAttentionVariant variant;
  variant.tiles_inner = tiles_inner;
  torch::Tensor ws =
      torch::empty({static_cast<int64_t>(latent_attention_backward_workspace(shape, variant))}, o.dtype(torch::kByte));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto fwd = [&] {
    latent_attention_forward(shape, scale, cview(q), cview(k), cview(v), mview(r.out), r.lse.data_ptr<float>(), stream,
                             variant);
  };
  const auto bwd = [&] {
    latent_attention_backward(shape, scale, cview(q), cview(k), cview(v), cview(r.out), cview(dout),
                              r.lse.data_ptr<float>(), mview(r.dq), mview(r.dk), mview(r.dv), ws.data_ptr(), ws.numel(), stream,
                              variant);
  };
  r.fwd_ms = hydra::test::median_event_ms(fwd, repeats, 1, stream);
  r.bwd_ms = hydra::test::median_event_ms(bwd, repeats, 1, stream);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return r;
}

void expect_same_results(const Case& c) {
  const OrderRun a = run_order(c, false, 1), b = run_order(c, true, 1);
  EXPECT_TRUE(torch::equal(a.out, b.out)) << name(c);
  EXPECT_TRUE(torch::equal(a.lse, b.lse)) << name(c);
  EXPECT_TRUE(torch::equal(a.dk, b.dk)) << name(c);
  EXPECT_TRUE(torch::equal(a.dv, b.dv)) << name(c);
  EXPECT_LT(rel_l2(a.dq, b.dq.to(torch::kDouble)), 1e-2) << name(c);
}

TEST(LatentAttentionOrder, BothBlockOrdersComputeTheSame) {
  for (const Case& c : {Case{3, 1000, 12, 3, 16}, Case{2, 129, 8, 2, 32}, Case{1, 300, 4, 4, 64}}) expect_same_results(c);
}

TEST(LatentAttentionOrder, DISABLED_Timing) {
  for (const Case& c : {Case{16, 1024, 12, 3, 16}, Case{8, 1024, 16, 4, 32}}) {
    expect_same_results(c);
    const OrderRun across = run_order(c, false, 30), inner = run_order(c, true, 30);
    std::printf("latent order %s: forward %.4f ms (tiles inner %.4f), backward %.4f ms (tiles inner %.4f)\n",
                name(c).c_str(), across.fwd_ms, inner.fwd_ms, across.bwd_ms, inner.bwd_ms);
  }
}

// The CCQA layer of the seed defaults (d_h 16) with kernel: fused against kernel: reference,
// same weights, bf16 parameters: output and every parameter gradient.
TEST(LatentAttentionCcqa, FusedLayerMatchesReferenceLayer) {
  model::ModelConfig c;
  c.dim = 768, c.heads = 12, c.kv_heads = 3, c.mlp_ratio = 3.0, c.macro_blocks = 1, c.vocab_size = 128;
  c.ccqa.compression = 4;
  c.ccqa.compress = "head_dim";  // the latent kernel at d_h 16 (the heads layout has cases of its own)
  model::ModelConfig cf = c;
  c.ccqa.kernel = "reference";
  cf.ccqa.kernel = "fused";
  torch::manual_seed(3);
  auto ref_layer = std::make_shared<model::CcqaAttention>(c, model::default_projection_factory());
  auto fused_layer = std::make_shared<model::CcqaAttention>(cf, model::default_projection_factory());
  {
    torch::NoGradGuard no_grad;
    auto src = ref_layer->named_parameters();
    for (auto& p : fused_layer->named_parameters()) p.value().copy_(src[p.key()]);
  }
  ref_layer->to(torch::kCUDA, torch::kBFloat16);
  fused_layer->to(torch::kCUDA, torch::kBFloat16);
  const int64_t B = 2, S = 513;
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const torch::Tensor x = torch::randn({B, S, c.dim}, o);
  const torch::Tensor pos = torch::arange(S, o.dtype(torch::kLong)).unsqueeze(0).expand({B, S}).contiguous();
  const torch::Tensor dy = torch::randn({B, S, c.dim}, o);
  const torch::Tensor y_ref = ref_layer->forward(x, pos);
  const torch::Tensor y_fused = fused_layer->forward(x, pos);
  y_ref.backward(dy);
  y_fused.backward(dy);
  EXPECT_LT(rel_l2(y_fused.detach(), y_ref.detach().to(torch::kDouble)), 2e-2);
  auto ref_params = ref_layer->named_parameters();
  for (const auto& p : fused_layer->named_parameters()) {
    const torch::Tensor g_ref = ref_params[p.key()].grad();
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    if (g_ref.norm().item<double>() == 0.0) continue;
    // Both sides are bf16 end to end; the reference is no more exact than the fused path.
    EXPECT_LT(rel_l2(p.value().grad(), g_ref.to(torch::kDouble)), 5e-2) << p.key();
  }
}

}  // namespace
}  // namespace hydra::kernels
