// The attention core: the one function every attention type calls, and the one that fused
// kernels will replace. Causal softmax attention with grouped-query heads.
//
// Layout [batch, seq, heads, head_dim] for all three inputs:
//   q [B, S, H, Dqk], k [B, S, H_kv, Dqk], v [B, S, H_kv, Dv], H_kv divides H; query head h
//   uses key/value head h / (H / H_kv) (repeat_interleave order, as SDPA's enable_gqa).
// Returns [B, S, H, Dv]. Causality is by index within the given sequence: output i sees
// keys 0..i. Mixture-of-Depths passes a subsequence already in position order, so masking
// by index is exactly masking by position.
//
// CPU (and the oracle for fused kernels): matmul + masked softmax, softmax in float32 at least.
// CUDA with LibTorch >= 2.5: at::scaled_dot_product_attention(is_causal, scale, enable_gqa).
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::model {

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// The matmul + softmax path on any device: what causal_attention computes on CPU.
at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      double scale);

// CCQA's value shift (docs/MODEL.md): v [B, S, H_kv, d] with the second half of each head's
// channels moved one token later, zero at the first token. The fused attention applies it as it
// reads the values instead (causal_attention_fused's value_shift).
at::Tensor shift_values(const at::Tensor& v);

// Decoding (model/decode.h): the n queries q [B, n, H, Dqk] are the last n tokens of the m >= n
// keys k [B, m, H_kv, Dqk] and values v [B, m, H_kv, Dv] (a cache and the new tokens): query i
// sits at index m - n + i and sees keys 0 .. m - n + i. The same grouping and softmax precision
// as causal_attention (matmul + masked softmax on any device). Returns [B, n, H, Dv].
at::Tensor attention_over_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// Decoding B sequences with preallocated caches (model/decode_batch.h): one query a row,
// q [B, 1, H, Dqk], over that row's keys k [B, m, H_kv, Dqk] and values v [B, m, H_kv, Dv]
// where visible [B, m] (bool) is true. Grouping and softmax precision as above.
at::Tensor attention_over_rows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible,
                               double scale);

}  // namespace hydra::model
