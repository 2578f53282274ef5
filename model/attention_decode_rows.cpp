// Decoding B sequences together with preallocated caches, per attention type (attention.h's
// decode_rows; model/decode_batch.h drives it). Each step is the cached step of
// attention_decode.cpp on one token of each row, with every shape fixed: the new keys and
// values go into slot count[b] of their row, each row's query attends over the slots its count
// makes visible, and the fixed state (CCQA's convolution histories and value shift) advances
// only where `write` says. x [1, B, E] keeps the rows as tokens of one sequence for the per-token
// steps (projections, norms, RoPE, qk-mean), which are the forward's own.
#include <cmath>

#include <torch/torch.h>

#include "common/errors.h"
#include "model/attention.h"
#include "model/attention_core.h"
#include "model/fused_ops.h"
#include "model/kv_cache.h"
#include "model/same_input_projections.h"

namespace hydra::model {
namespace {

// One token a row: [1, B, ...] (the rows as tokens) <-> [B, 1, ...] (the rows as sequences).
torch::Tensor as_rows(const torch::Tensor& t) { return t.transpose(0, 1); }

// Each row's query q [1, B, H, D] over the first `span` slots of its keys and values
// [B, capacity, H_kv, ...] that the row's count makes visible: [1, B, H, Dv].
torch::Tensor attend_rows(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const CacheRows& rows,
                          int64_t span, double scale) {
  return as_rows(attention_over_rows(as_rows(q), k.narrow(1, 0, span), v.narrow(1, 0, span), visible_slots(rows, span),
                                     scale));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// MQA, GQA, MHA.
torch::Tensor GqaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                        const torch::Tensor& write, int64_t span) {
  const std::vector<torch::Tensor> qkv = queries_keys_values(x, positions);
  GqaCache& c = std::get<GqaCache>(rows.tensors);
  put_rows(c.k, rows, qkv[1].select(0, 0));
  put_rows(c.v, rows, qkv[2].select(0, 0));
  const torch::Tensor o = attend_rows(qkv[0], c.k, c.v, rows, span, 1.0 / std::sqrt(static_cast<double>(dims.d)));
  advance_rows(rows, write);
  return output(o);
}

// ---------------------------------------------------------------------------------------------
// CCQA.
namespace {

// conv on each row's K-1 previous inputs (history [B, K-1, C]) and its new one x [B, 1, C]; the
// history moves on by one input where write. Returns the new outputs [B, 1, C].
torch::Tensor convolve_rows(CausalConvImpl& conv, torch::Tensor& history, const torch::Tensor& x,
                            const torch::Tensor& write) {
  const int64_t K = conv.weight.size(2);
  if (!history.defined()) history = torch::zeros({x.size(0), K - 1, x.size(2)}, x.options());
  const torch::Tensor joined = torch::cat({history, x}, 1);
  const torch::Tensor out = conv.forward_unpadded(joined);
  keep_where(history, joined.narrow(1, 1, K - 1), write);
  return out;
}

}  // namespace

torch::Tensor CcqaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                         const torch::Tensor& write, int64_t span) {
  const int64_t B = x.size(1), dh = dims.dh;
  CcqaCache& c = std::get<CcqaCache>(rows.tensors);
  // 1. Down-projections and the values' projection.
  const std::vector<torch::Tensor> qkv0 = project_same_input(x, {wq.get(), wk.get(), wv.get()});
  const torch::Tensor &q0 = qkv0[0], &k0 = qkv0[1], &v0 = qkv0[2];
  const torch::Tensor kv_of_head = kv_of_local_heads(q0.size(-1) / dh, x.options());
  // 2. The value shift: the second half of each head from the row's previous token.
  const torch::Tensor v0_row = as_rows(v0);  // [B, 1, H_kv d_h]
  const torch::Tensor v = as_rows(values(torch::cat({state_or_zeros(c.v0_last, v0_row), v0_row}, 1)).narrow(1, 1, 1));
  keep_where(c.v0_last, v0_row, write);
  // 3. The convolutions, continuing each row's history.
  torch::Tensor qc = q0, kc = k0;
  if (cfg.use_convs) {
    qc = as_rows(convolve_rows(*conv2_q, c.conv2_q, convolve_rows(*conv1_q, c.conv1_q, as_rows(q0), write), write));
    kc = as_rows(convolve_rows(*conv2_k, c.conv2_k, convolve_rows(*conv1_k, c.conv1_k, as_rows(k0), write), write));
  }
  // 4-7. Per token, as in the forward.
  const std::vector<torch::Tensor> qk = mix_and_rotate(q0, k0, qc, kc, positions, kv_of_head);
  put_rows(c.k, rows, qk[1].select(0, 0));
  put_rows(c.v, rows, v.select(0, 0));
  // 7. Each row's query over its keys and values (every KV head cached under replicated tp).
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  torch::Tensor keys = c.k.narrow(1, 0, span), vals = c.v.narrow(1, 0, span);
  if (kv_of_head.defined()) keys = keys.index_select(2, kv_of_head), vals = vals.index_select(2, kv_of_head);
  const torch::Tensor o = attend_rows(qk[0], keys, vals, rows, span, scale);
  advance_rows(rows, write);
  // 8. Per-head norm, W_o (the reference ops, as decode).
  return wo->forward(head_rms_norm(o.reshape({1, B, -1}), out_norm->weight, dh, eps));
}

// ---------------------------------------------------------------------------------------------
// MLA with absorbed up-projections (attention_decode.cpp derives them): the rows cache the
// latent [c_kv ; k_r] of one head.
torch::Tensor MlaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                        const torch::Tensor& write, int64_t span) {
  const std::vector<torch::Tensor> q_entry = absorbed_query_and_entry(x, positions);
  MlaCache& c = std::get<MlaCache>(rows.tensors);
  put_rows(c.latent, rows, q_entry[1].select(0, 0));  // [B, 1, d_c + d_r]
  const torch::Tensor o_latent = attend_rows(q_entry[0], c.latent, c.latent.narrow(-1, 0, dims.dc), rows, span,
                                             1.0 / std::sqrt(static_cast<double>(dims.d + dims.dr)));
  advance_rows(rows, write);
  return absorbed_output(o_latent);
}

}  // namespace hydra::model
