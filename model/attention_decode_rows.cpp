// Decoding B sequences together with preallocated caches, per attention type (attention.h's
// decode_rows; model/decode_batch.h drives it). Each step is the cached step of
// attention_decode.cpp on one token of each row, with every shape fixed: the new keys and
// values go into slot count[b] of their row, each row's query attends over the slots its count
// makes visible, and the fixed state (CCQA's convolution histories and value shift) advances
// only where `write` says. x [1, B, E] keeps the rows as tokens of one sequence for the per-token
// steps (projections, norms, RoPE, qk-mean), which are the forward's own.
#include <cmath>

#include <torch/types.h>

#include "common/errors.h"
#include "model/attention.h"
#include "model/decode_attention.h"
#include "model/decode_conv.h"
#include "model/fused_ops.h"
#include "model/kv_cache.h"
#include "model/same_input_projections.h"

namespace hydra::model {
namespace {

// One token a row: [1, B, ...] (the rows as tokens) <-> [B, 1, ...] (the rows as sequences),
// and [1, B, ...] <-> [B, ...] (the rows, as put_and_attend_rows takes them).
torch::Tensor as_rows(const torch::Tensor& t) { return t.transpose(0, 1); }
torch::Tensor rows_of(const torch::Tensor& t) { return t.select(0, 0); }
torch::Tensor as_tokens(const torch::Tensor& t) { return t.unsqueeze(0); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// MQA, GQA, MHA.
torch::Tensor GqaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                        const torch::Tensor& write, int64_t span) {
  const std::vector<torch::Tensor> qkv = queries_keys_values(x, positions);
  GqaCache& c = std::get<GqaCache>(rows.tensors);
  const RowsToken token{rows_of(qkv[0]), rows_of(qkv[1]), rows_of(qkv[2])};
  const torch::Tensor o = put_and_attend_rows(token, c.k, c.v, rows, span, 1.0 / std::sqrt(static_cast<double>(dims.d)));
  advance_rows(rows, write);
  return output(as_tokens(o));
}

// ---------------------------------------------------------------------------------------------
// CCQA.

torch::Tensor CcqaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                         const torch::Tensor& write, int64_t span) {
  const int64_t B = x.size(1), dh = dims.dh;
  CcqaCache& c = std::get<CcqaCache>(rows.tensors);
  // 1. Down-projections and the values' projection.
  const std::vector<torch::Tensor> qkv0 = project_same_input(x, qkv_projections());
  const torch::Tensor &q0 = qkv0[0], &k0 = qkv0[1], &v0 = qkv0[2];
  const torch::Tensor kv_of_head = kv_of_local_heads(q0.size(-1) / dh, x.options());
  // 2. The value shift (shift_values on one token): each KV head's channels [d_h/2, d_h) come
  // from the row's previous token, the first half from this one. One cat, where the sequence
  // form would cat the previous token in, shift and cut this one out again.
  const torch::Tensor v0_row = as_rows(v0);  // [B, 1, H_kv d_h]
  torch::Tensor v = v0.view({1, B, -1, dh});
  if (cfg.value_shift) {
    const int64_t half = dh / 2;
    const torch::Tensor previous = as_rows(state_or_zeros(c.v0_last, v0_row)).view({1, B, -1, dh});
    v = torch::cat({v.narrow(-1, 0, half), previous.narrow(-1, half, dh - half)}, -1);
  }
  keep_where(c.v0_last, v0_row, write);
  // 3. The convolutions, continuing each row's history.
  torch::Tensor qc = q0, kc = k0;
  if (cfg.use_convs) {
    qc = as_rows(convolve_rows(*conv2_q, c.conv2_q, convolve_rows(*conv1_q, c.conv1_q, as_rows(q0), write), write));
    kc = as_rows(convolve_rows(*conv2_k, c.conv2_k, convolve_rows(*conv1_k, c.conv1_k, as_rows(k0), write), write));
  }
  // 4-7. Per token, as in the forward.
  const std::vector<torch::Tensor> qk = mix_and_rotate(q0, k0, qc, kc, positions, kv_of_head);
  // 7. Each row's query over its keys and values (every KV head cached under replicated tp).
  RowsToken token{rows_of(qk[0]), rows_of(qk[1]), rows_of(v)};
  token.kv_of_head = kv_of_head;
  const torch::Tensor o = put_and_attend_rows(token, c.k, c.v, rows, span, 1.0 / std::sqrt(static_cast<double>(dh)));
  advance_rows(rows, write);
  // 8. Per-head norm (the forward's fused node unless the layer is the reference one), W_o.
  const torch::Tensor flat = o.reshape({1, B, -1});
  if (impl == CcqaImpl::kReference) return wo->forward(head_rms_norm(flat, out_norm->weight, dh, eps));
  return wo->forward(fused_head_rms_norm(flat, out_norm->weight, dh, eps));
}

// ---------------------------------------------------------------------------------------------
// MLA with absorbed up-projections (attention_decode.cpp derives them): the rows cache the
// latent [c_kv ; k_r] of one head.
torch::Tensor MlaAttention::decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                        const torch::Tensor& write, int64_t span) {
  const std::vector<torch::Tensor> q_entry = absorbed_query_and_entry(x, positions);
  MlaCache& c = std::get<MlaCache>(rows.tensors);
  // The entry [B, 1, d_c + d_r] is the key of one head; its first d_c channels are the value.
  RowsToken token{rows_of(q_entry[0]), rows_of(q_entry[1]), torch::Tensor()};
  token.value_size = dims.dc;
  torch::Tensor no_value_slots;
  const torch::Tensor o_latent = put_and_attend_rows(token, c.latent, no_value_slots, rows, span,
                                                     1.0 / std::sqrt(static_cast<double>(dims.d + dims.dr)));
  advance_rows(rows, write);
  return absorbed_output(as_tokens(o_latent));
}

}  // namespace hydra::model
