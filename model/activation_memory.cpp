// Saved tensors per token, node by node (docs/MODEL.md "Memory" lists the same inventory).
// "Elements" below are in the compute dtype; rstd (one per normalised row) and the
// attention's log-sum-exp (one per head) are fp32.
#include "model/activation_memory.h"

#include "model/dims.h"

namespace hydra::model {
namespace {

constexpr int64_t kFp32 = 4;

// The two pre-norms and the SwiGLU MLP, the same in every layer: the layer input x (saved by
// the attention's RMSNorm) and its output n1 (by the q/k/v projections); h = x + alpha attn
// (by the fused add+RMSNorm) and its output n2 (by w_gate and w_up); gate, up (by SwiGLU) and
// SwiGLU's output (by w_down), split over tp; two rstd.
ActivationBytes norms_and_mlp(const Dims& m, int dtype_bytes, int tp) {
  ActivationBytes a;
  a.saved = (4 * m.E + 3 * m.F / tp) * dtype_bytes + 2 * kFp32;
  // The MLP's backward: the gradients of gate, up and SwiGLU's output, and of n2 and h.
  a.transient = (3 * m.F / tp + 2 * m.E) * dtype_bytes;
  return a;
}

// The attention between the norms, from its input n1 (counted above) to its output.
int64_t attention_saved(const std::string& type, const ModelConfig& c, const Dims& m, int dtype_bytes, int tp) {
  if (is_grouped_type(type)) {
    // q before and after QK-norm+RoPE, the attention's output and its per-head norm's output
    // (split over tp); the key/value heads: k before and after, v (split with the query heads,
    // MQA's one head replicated). rstd of q and k, log-sum-exp, rstd of the output norm.
    const int64_t heads = m.H / tp, kv_all = grouped_kv_heads(type, c);
    const int64_t kv = kv_heads_per_rank(kv_all, tp);
    return (4 * heads * m.d + 3 * kv * m.d) * dtype_bytes + (3 * heads + kv) * kFp32;
  }
  if (type == "ccqa") {
    // The fused prologue (d_h <= kCcqaFusedPrologueMaxHeadDim) keeps its inputs q0, k0 and v (it
    // recomputes the rest per tile); the latent attention keeps q, k, v and its output; the
    // output norm's output feeds W_o.
    // Under tp the query heads split; the key/value heads split with them when tp divides H_kc,
    // else every rank holds all of them (CcqaAttention::kv_split).
    const int64_t heads = m.Hc / tp, kv = kv_heads_per_rank(m.Hkv, tp);
    const int64_t Lq = heads * m.dh, Lk = kv * m.dh;
    const int64_t fp32 = 2 * heads * kFp32;
    if (m.dh <= kCcqaFusedPrologueMaxHeadDim) return (4 * Lq + 4 * Lk) * dtype_bytes + fp32;
    // Above it, the products path: q0 and k0 (the convolutions' and the mix's input), each
    // convolution pair's K-tap windows with a bias column block of 8 a head (saved by its batched
    // product) and its output (by the mix), v (unshifted: the attention shifts it as it reads),
    // the mix's q and k, the attention's output and the norm's output.
    const int64_t windows = c.ccqa.use_convs ? m.K * (Lq + Lk) + 8 * (heads + kv) : 0;
    const int64_t conv_out = c.ccqa.use_convs ? Lq + Lk : 0;
    return ((Lq + Lk) + windows + conv_out + Lk + (Lq + Lk) + Lq + Lq) * dtype_bytes + fp32;
  }
  // mla: both latents before and after their norms (replicated), q = [q_c; q_r] and
  // k = [k_c; k_r] at d + d_r per head, v, the output and its norm's output at d per head.
  const int64_t heads = m.H / tp;
  return (4 * m.dc + 2 * heads * (m.d + m.dr) + 3 * heads * m.d) * dtype_bytes + (2 + 2 * heads) * kFp32;
}

}  // namespace

ActivationBytes layer_activation_bytes(const ModelConfig& config, int position, int dtype_bytes, int tp) {
  const Dims m = model_dims(config);
  const std::string& type = config.pattern.at(static_cast<size_t>(position));
  ActivationBytes a = norms_and_mlp(m, dtype_bytes, tp);
  const int64_t attention = attention_saved(type, config, m, dtype_bytes, tp);
  a.saved += attention;
  // The attention's backward holds about one gradient per saved tensor at its widest.
  if (attention > a.transient) a.transient = attention;
  return a;
}

int64_t mod_overhead_bytes(const ModelConfig& config, int dtype_bytes) {
  // gate * (layer(x_sub) - x_sub): the multiplication keeps the difference [E] and the gate.
  return (config.dim + 1) * dtype_bytes;
}

int64_t head_activation_bytes(const ModelConfig& config, int dtype_bytes) {
  // The final norm's input and rstd; the chunked LM head's saved gradient of its input.
  return 2 * config.dim * dtype_bytes + kFp32;
}

}  // namespace hydra::model
