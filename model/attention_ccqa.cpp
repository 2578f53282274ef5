// CCQA: compressed convolutional grouped-query attention (docs/MODEL.md, steps 1-8; CCGQA of
// arXiv:2510.04476 with the HYDRA defaults). Attention runs entirely in the latent: Hc query
// and Hkv key/value heads of size d_h (model/dims.h: d / C each, or the paper's H / C heads of
// the full d with model.ccqa.compress: heads); W_o is the only up-projection.
#include <cmath>

#include <torch/types.h>
#include <torch/utils.h>

#include "model/attention.h"
#include "model/attention_core.h"
#include "model/causal_conv_products.h"
#include "model/fused_ops.h"
#include "model/same_input_projections.h"
#ifdef HYDRA_CUDA
#include "model/attention_fused.h"  // kernel: fused (CUDA build only)
#include "model/ccqa_mix_cuda.h"  // kernel: fused, steps 4-7 after the convolutions (CUDA build only)
#include "model/ccqa_prologue_fused.h"  // kernel: fused, steps 2-7 (CUDA build only)
#endif

namespace hydra::model {

CausalConvImpl::CausalConvImpl(int64_t channels, int64_t group_size_, int64_t kernel) : group_size(group_size_) {
  weight = register_parameter("weight", torch::zeros({channels, group_size, kernel}));
  bias = register_parameter("bias", torch::zeros({channels}));
  // Identity: output channel c takes its own input channel (index c mod group_size within its
  // group) at the last tap, i.e. at the current token.
  torch::NoGradGuard no_grad;
  for (int64_t c = 0; c < channels; ++c) weight[c][c % group_size][kernel - 1] = 1.0;
}

torch::Tensor CausalConvImpl::forward(const torch::Tensor& x) {
  const int64_t kernel = weight.size(2);
  const int64_t groups = weight.size(0) / group_size;  // from the weight: a head shard works too
  // [B, S, C] -> [B, C, S], K-1 zeros on the left: output t sees inputs t-K+1 .. t.
  const torch::Tensor padded = torch::constant_pad_nd(x.transpose(1, 2), {kernel - 1, 0}, 0.0);
  // (Explicit IntArrayRefs: plain ints make the conv1d overloads ambiguous.)
  const std::vector<int64_t> one = {1}, zero = {0};
  return torch::conv1d(padded, weight, bias, /*stride=*/one, /*padding=*/zero, /*dilation=*/one, groups).transpose(1, 2);
}

torch::Tensor CausalConvImpl::forward_unpadded(const torch::Tensor& x) {
  const int64_t groups = weight.size(0) / group_size;
  const std::vector<int64_t> one = {1}, zero = {0};
  return torch::conv1d(x.transpose(1, 2), weight, bias, one, zero, one, groups).transpose(1, 2);
}

LayerSharding CcqaAttention::sharding(const Dims& m, int tp) {
  const auto col = ShardRole::kColumn, row = ShardRole::kRow, rep = ShardRole::kReplicated;
  // Everything splits by heads: query heads for the query part, KV heads for the key/value
  // part, in units of the latent head size d_h. When tp does not divide H_kv the key/value
  // part stays whole on every rank (its gradients summed over tp, see tp_hooks.h).
  const bool kv = kv_split(m, tp);
  return {{{"wq", m.E, m.Lq, col, m.dh, m.init_std},
           {"wk", m.E, m.Lk, kv ? col : rep, m.dh, m.init_std},
           {"wv", m.E, m.Lk, kv ? col : rep, m.dh, m.init_std},
           {"wo", m.Lq, m.E, row, m.dh, m.out_std}},
          {{"conv1_q.weight", true, m.dh, "depthwise, query channels"},
           {"conv1_q.bias", true, m.dh, ""},
           {"conv1_k.weight", kv, m.dh, "depthwise, key channels"},
           {"conv1_k.bias", kv, m.dh, ""},
           {"conv2_q.weight", true, m.dh, "one group per query head"},
           {"conv2_q.bias", true, m.dh, ""},
           {"conv2_k.weight", kv, m.dh, "one group per KV head"},
           {"conv2_k.bias", kv, m.dh, ""},
           {"q_norm.weight", false, 1, "post-mix norm over d_h, shared by heads"},
           {"k_norm.weight", false, 1, "post-mix norm over d_h"},
           {"tau", kv, 1, "one temperature per KV head"},
           {"out_norm.weight", true, m.dh, "per-head output norm"}}};
}

CcqaImpl ccqa_impl(const CcqaConfig& config) {
  return config.kernel == "fused" ? CcqaImpl::kFused : CcqaImpl::kReference;
}

CcqaAttention::CcqaAttention(const ModelConfig& c, const ProjectionFactory& factory, const TensorParallelHooks& tp_)
    : CcqaAttention(c, factory, tp_, ccqa_impl(c.ccqa)) {}

CcqaAttention::CcqaAttention(const ModelConfig& c, const ProjectionFactory& factory, const TensorParallelHooks& tp_,
                             CcqaImpl impl_)
    : dims(model_dims(c)), cfg(c.ccqa), impl(impl_), tp(tp_), eps(c.norm_eps), theta(c.rope_theta) {
  const LayerSharding shard = sharding(dims, tp.size);
  const auto& specs = shard.projections;
  // This rank's channels: its query heads, and its KV heads (all of them when replicated).
  const int64_t lq = dims.Lq / tp.size;
  const int64_t kv_parts = kv_split(dims, tp.size) ? tp.size : 1;
  const int64_t lk = dims.Lk / kv_parts;
  wq = register_module("wq", make_projection(specs, "wq", factory));
  wk = register_module("wk", make_projection(specs, "wk", factory));
  wv = register_module("wv", make_projection(specs, "wv", factory));
  wo = register_module("wo", make_projection(specs, "wo", factory));
  if (cfg.use_convs) {
    conv1_q = register_module("conv1_q", std::make_shared<CausalConvImpl>(lq, 1, dims.K));
    conv1_k = register_module("conv1_k", std::make_shared<CausalConvImpl>(lk, 1, dims.K));
    conv2_q = register_module("conv2_q", std::make_shared<CausalConvImpl>(lq, dims.dh, dims.K));
    conv2_k = register_module("conv2_k", std::make_shared<CausalConvImpl>(lk, dims.dh, dims.K));
  }
  if (cfg.post_mix_norm) {
    q_norm = register_module("q_norm", std::make_shared<RMSNormImpl>(dims.dh, eps));
    k_norm = register_module("k_norm", std::make_shared<RMSNormImpl>(dims.dh, eps));
  }
  tau = register_parameter("tau", torch::zeros({dims.Hkv / kv_parts}));
  out_norm = register_module("out_norm", std::make_shared<RMSNormImpl>(lq, eps));
  mark_region_replicated(*this, shard, tp);
}

torch::Tensor CcqaAttention::values(const torch::Tensor& v0) {
  const int64_t B = v0.size(0), S = v0.size(1), dh = dims.dh;
  // v0 = x W_v holds both halves: per KV head, channels [0, d_h/2) are x W_v1 and
  // [d_h/2, d_h) are x W_v2 of docs/MODEL.md.
  const torch::Tensor v = v0.view({B, S, -1, dh});
  // The second half moves one token later: v2 at t is x_(t-1) W_v2, zero at t = 0.
  return cfg.value_shift ? shift_values(v) : v;
}

namespace {
#ifdef HYDRA_CUDA
constexpr bool kFusedKernels = true;

// Steps 3-7 through the fused prologue (every combination of use_convs and qk_mean); v is
// v0 per head, unshifted: the fused attention applies step 2's shift as it reads the values
// (the caller passes cfg.value_shift on). q, k, v stay undefined (the caller runs the reference
// path) when the kernels do not take the shapes or dtypes (d_h above 32, K > 3,
// float16/float64, CPU) or the post-mix norm is off (an ablation: the kernels always normalise).
void fused_prologue(CcqaAttention& a, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
                    const torch::Tensor& positions, torch::Tensor& q, torch::Tensor& k, torch::Tensor& v) {
  if (!a.cfg.post_mix_norm) return;
  CcqaPrologueOptions o;
  o.head_dim = a.dims.dh;
  o.conv_kernel = a.dims.K;
  o.use_convs = a.cfg.use_convs;
  o.qk_gain = a.cfg.qk_mean ? a.cfg.qk_mean_gain : 0.0;
  o.eps = a.q_norm->eps;
  o.theta = a.theta;
  o.baseline_glue = a.impl == CcqaImpl::kFusedBaseline;
  if (!ccqa_prologue_fused_applies(q0, k0, o)) return;
  CcqaPrologueWeights w;
  if (o.use_convs) {
    w.conv1_q_w = a.conv1_q->weight;
    w.conv1_q_b = a.conv1_q->bias;
    w.conv1_k_w = a.conv1_k->weight;
    w.conv1_k_b = a.conv1_k->bias;
    w.conv2_q_w = a.conv2_q->weight;
    w.conv2_q_b = a.conv2_q->bias;
    w.conv2_k_w = a.conv2_k->weight;
    w.conv2_k_b = a.conv2_k->bias;
  }
  w.q_norm_w = a.q_norm->weight;
  w.k_norm_w = a.k_norm->weight;
  w.tau = a.tau;
  const std::vector<torch::Tensor> qkv = ccqa_prologue_fused(q0, k0, v0, positions, w, o);
  q = qkv[0];
  k = qkv[1];
  v = qkv[2];
}

torch::Tensor fused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                              bool value_shift) {
  return causal_attention_fused(q, k, v, scale, value_shift);
}

#else
// This build has no fused kernels: every layer runs the reference ops, and these two exist
// only so that the forward reads the same in both builds (never called).
constexpr bool kFusedKernels = false;
void fused_prologue(CcqaAttention&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                    const torch::Tensor&, torch::Tensor&, torch::Tensor&, torch::Tensor&) {}

torch::Tensor fused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                              bool value_shift) {
  return causal_attention(q, k, value_shift ? shift_values(v) : v, scale);
}
#endif
}  // namespace

std::vector<torch::Tensor> CcqaAttention::reference_prologue(const torch::Tensor& q0, const torch::Tensor& k0,
                                                             const torch::Tensor& positions,
                                                             const torch::Tensor& kv_of_head, bool conv_products) {
  // 3. Two causal convolutions: depthwise, then grouped per head.
  const auto convs = [conv_products](CausalConvImpl& c1, CausalConvImpl& c2, const torch::Tensor& x) {
    return conv_products ? causal_conv_pair_products(x, c1.weight, c1.bias, c2.weight, c2.bias)
                         : c2.forward(c1.forward(x));
  };
  torch::Tensor q = q0, k = k0;
  if (cfg.use_convs) {
    q = convs(*conv1_q, *conv2_q, q0);
    k = convs(*conv1_k, *conv2_k, k0);
  }
  return mix_and_rotate(q0, k0, q, k, positions, kv_of_head);
}

std::vector<torch::Tensor> CcqaAttention::mix_and_rotate(const torch::Tensor& q0, const torch::Tensor& k0,
                                                         const torch::Tensor& qc, const torch::Tensor& kc,
                                                         const torch::Tensor& positions,
                                                         const torch::Tensor& kv_of_head) {
  const int64_t B = q0.size(0), S = q0.size(1), dh = dims.dh;
  torch::Tensor q = qc.view({B, S, -1, dh});
  torch::Tensor k = kc.view({B, S, -1, dh});
  const int64_t heads = q.size(2), kv_heads = k.size(2);
  const bool kv_whole = kv_of_head.defined();
#ifdef HYDRA_CUDA
  // Steps 4-7 as one kernel each way where the fused prologue does not take the head size (the
  // `heads` layout; decoding's single tokens too): about twenty ATen launches fewer.
  if (impl != CcqaImpl::kReference && !kv_whole && cfg.post_mix_norm) {
    const CcqaMixOptions o{dh, cfg.qk_mean ? cfg.qk_mean_gain : 0.0, q_norm->eps, theta};
    if (auto qk = ccqa_mix_cuda(q0, k0, qc, kc, positions, q_norm->weight, k_norm->weight, tau, o)) return *qk;
  }
#endif
  const int64_t group = kv_whole ? dims.Hc / dims.Hkv : heads / kv_heads;
  // 4. qk-mean on the pre-convolution latents: m = (q0 + repeat_kv(k0)) / 2 per query head;
  //    a KV head adds the mean of m over its group of query heads.
  if (cfg.qk_mean && kv_whole) {
    const torch::Tensor q0h = q0.view({B, S, heads, dh});
    const torch::Tensor k0h = k0.view({B, S, kv_heads, dh});
    q = q + cfg.qk_mean_gain * 0.5 * (q0h + k0h.index_select(2, kv_of_head));
    // Mean of m over a group = (k0 + mean of the group's q0) / 2; the group's q0 are summed
    // here per KV head over this rank's heads, then over the ranks.
    const torch::Tensor q0_sum = tp.sum_partial(torch::zeros_like(k0h).index_add(2, kv_of_head, q0h));
    k = k + cfg.qk_mean_gain * 0.5 * (k0h + q0_sum / static_cast<double>(group));
  } else if (cfg.qk_mean) {
    const torch::Tensor q0h = q0.view({B, S, heads, dh});
    const torch::Tensor k0h = k0.view({B, S, kv_heads, dh});
    // Query head h = j G + i of KV head j: the KV head broadcasts over its group (no G-fold copy).
    // m = sum / 2, its factor folded into the adds' alpha: three kernels and a mean where the
    // formula as written takes six (decoding runs them for one token, at launch speed).
    const torch::Tensor sum = q0h.view({B, S, kv_heads, group, dh}) + k0h.unsqueeze(3);
    q = q.add(sum.view({B, S, heads, dh}), cfg.qk_mean_gain * 0.5);
    k = k.add(sum.mean(3), cfg.qk_mean_gain * 0.5);
  }
  // 5. Post-mix RMSNorm over d_h (unless switched off). 6. Key temperature per KV head.
  if (cfg.post_mix_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  k = k * torch::exp(tau).view({1, 1, -1, 1});
  // 7. RoPE over d_h: the reference formula for the reference implementation (the oracle of the
  // fused prologue), else the fused op (one kernel on CUDA where apply_rope takes about a dozen:
  // this is decoding's path, and it ran at batch 1 at the speed of its kernel launches).
  if (impl == CcqaImpl::kReference) return {apply_rope(q, positions, theta), apply_rope(k, positions, theta)};
  return {fused_rope(q, positions, theta), fused_rope(k, positions, theta)};
}

torch::Tensor CcqaAttention::kv_of_local_heads(int64_t heads, const torch::TensorOptions& options) const {
  if (!tp.active() || kv_split(dims, tp.size)) return {};
  return torch::div(torch::arange(heads, options.dtype(torch::kLong)) + tp.rank * heads, dims.Hc / dims.Hkv, "floor");
}

torch::Tensor CcqaAttention::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), S = x.size(1), dh = dims.dh;
  // 1. Down-projections into the latent, and the values' projection (step 2).
  const std::vector<torch::Tensor> qkv0 = project_same_input(x, qkv_projections());
  const torch::Tensor& q0 = qkv0[0];  // [B, S, H d_h]
  const torch::Tensor& k0 = qkv0[1];  // [B, S, H_kv d_h]
  const torch::Tensor& v0 = qkv0[2];  // [B, S, H_kv d_h]
  // Replicated KV heads under tp: this rank's query heads are a slice of the global ones and
  // each uses KV head (global head) / G, G = Hc / Hkv; a KV group may span ranks.
  const torch::Tensor kv_of_head = kv_of_local_heads(q0.size(-1) / dh, x.options());
  // 2-7. Values, convolutions, qk-mean, norms, temperature, RoPE.
  const bool fused = kFusedKernels && impl != CcqaImpl::kReference && x.is_cuda();
  torch::Tensor q, k, v;
  // The fused prologue (kernels/ccqa_prologue.h) only when this rank holds whole KV groups:
  // replicated KV heads under tp need the cross-rank qk-mean sum and keep the reference path.
  if (fused && !kv_of_head.defined()) fused_prologue(*this, q0, k0, v0, positions, q, k, v);
  if (!q.defined()) {  // not fused, or shapes the kernels do not take
    const std::vector<torch::Tensor> qk = reference_prologue(q0, k0, positions, kv_of_head, fused);
    q = qk[0], k = qk[1];
    // 2. Values: the fused attention reads them unshifted and applies the shift itself (one
    // copy each way fewer); the reference ops shift here.
    v = fused ? v0.view({B, S, -1, dh}) : values(v0);
  }
  const bool shift_in_attention = fused && cfg.value_shift;
  // 7. Causal GQA attention at the latent head size.
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  const auto attend = [&](const torch::Tensor& qa, const torch::Tensor& ka, const torch::Tensor& va) {
    return fused ? fused_attention(qa, ka, va, scale, shift_in_attention) : causal_attention(qa, ka, va, scale);
  };
  const torch::Tensor o = kv_of_head.defined()
                              ? attend(q, k.index_select(2, kv_of_head), v.index_select(2, kv_of_head))
                              : attend(q, k, v);
  // 8. Per-head norm over d_h, then the one up-projection W_o. On the fused path the norm is
  // one node with its own kernels (fused_ops.h), as in the other attention layers.
  const torch::Tensor flat = o.reshape({B, S, -1});
  if (fused && impl != CcqaImpl::kFusedBaseline) return wo->forward(fused_head_rms_norm(flat, out_norm->weight, dh, eps));
  return wo->forward(head_rms_norm(flat, out_norm->weight, dh, eps));
}

}  // namespace hydra::model
