// put_and_attend_rows_cuda (decode_attention_cuda.h): shapes, strides and a workspace for
// kernels/decode_attention.h.
#include "model/decode_attention_cuda.h"

#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/decode_attention.h"
#include "model/fused_ops_cuda.h"

namespace hydra::model {
namespace {

// [B, heads, D] rows of one token with unit channel stride (a copy when the channels are strided).
at::Tensor channels_contiguous(const at::Tensor& t) { return t.stride(2) == 1 ? t : t.contiguous(); }

kernels::DecodeTokens tokens_of(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1)};
}

}  // namespace

std::optional<at::Tensor> put_and_attend_rows_cuda(const RowsToken& token, at::Tensor& k_slots, at::Tensor& v_slots,
                                                   const CacheRows& rows, int64_t span, double scale) {
  const bool values_in_keys = !token.v_new.defined();
  if (token.kv_of_head.defined() || !fused_kernels_apply({token.q, token.k_new, k_slots}) ||
      (!values_in_keys && !fused_kernels_apply({token.q, token.v_new, v_slots}))) {
    return std::nullopt;
  }
  const at::Tensor& count = rows.count;
  if (count.device() != token.q.device() || count.scalar_type() != at::kLong || !count.is_contiguous() ||
      token.q.dim() != 3 || token.k_new.dim() != 3 || !k_slots.is_contiguous() ||
      (!values_in_keys && (token.v_new.dim() != 3 || !v_slots.is_contiguous()))) {
    return std::nullopt;
  }
  const c10::cuda::CUDAGuard guard(token.q.device());
  const at::Tensor q = channels_contiguous(token.q), k_new = channels_contiguous(token.k_new);
  const at::Tensor v_new = values_in_keys ? at::Tensor() : channels_contiguous(token.v_new);
  kernels::DecodeAttentionShape s;
  s.rows = static_cast<int>(q.size(0));
  s.heads = static_cast<int>(q.size(1));
  s.kv_heads = static_cast<int>(k_new.size(1));
  s.key_size = static_cast<int>(q.size(2));
  s.value_size = static_cast<int>(values_in_keys ? token.value_size : v_new.size(2));
  s.capacity = static_cast<int>(rows.capacity);
  s.span = static_cast<int>(span);
  s.scale = static_cast<float>(scale);
  s.dtype = storage_of(q);
  s.values_in_keys = values_in_keys;
  const auto slots_shape = [&](int64_t size) {
    return std::vector<int64_t>{s.rows, rows.capacity, s.kv_heads, size};
  };
  if (k_new.size(0) != s.rows || k_new.size(2) != s.key_size || count.numel() != s.rows ||
      k_slots.sizes() != at::IntArrayRef(slots_shape(s.key_size)) ||
      (!values_in_keys && (v_new.size(0) != s.rows || v_new.size(1) != s.kv_heads ||
                           v_slots.sizes() != at::IntArrayRef(slots_shape(s.value_size))))) {
    return std::nullopt;
  }
  at::Tensor out = at::empty({s.rows, s.heads, s.value_size}, q.options());
  kernels::DecodeAttentionTensors t;
  t.q = tokens_of(q);
  t.k_new = tokens_of(k_new);
  if (!values_in_keys) t.v_new = tokens_of(v_new);
  t.k_slots = k_slots.data_ptr();
  t.v_slots = values_in_keys ? nullptr : v_slots.data_ptr();
  t.count = count.data_ptr<int64_t>();
  t.out = out.data_ptr();
  if (!kernels::decode_attention_supported(s, t)) return std::nullopt;
  const size_t bytes = kernels::decode_attention_workspace_bytes(s);
  const at::Tensor workspace =
      bytes > 0 ? at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte)) : at::Tensor();
  kernels::decode_attention(s, t, bytes > 0 ? workspace.data_ptr() : nullptr, bytes,
                            at::cuda::getCurrentCUDAStream());
  return out;
}

}  // namespace hydra::model
