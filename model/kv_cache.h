// What one attention layer keeps of the tokens it has seen, so that the next token needs only
// its own projections (docs/MODEL.md "Decoding with caches"). One cache per layer *instance*:
// per macro-block, per MoR recursion, per position in the pattern (model/decode.h owns them).
// The caches hold one sequence (batch 1), tensors [1, n, ...] with n the tokens that reached the
// layer (under MoD/MoR fewer than the context). An empty cache has undefined tensors. Under
// tensor parallelism each rank's cache holds what its forward computes: the KV heads of its
// query heads where they split (GQA, MHA; CCQA when tp divides its KV heads), every KV head or
// the whole latent where they are replicated (MQA, MLA; CCQA otherwise).
//
// Appending never writes into an existing tensor (each step makes new ones with cat), so a
// copy of a cache is an independent fork of it: continuing one copy leaves the other as it was.
#pragma once

#include <variant>

#include <ATen/core/Tensor.h>

namespace hydra::model {

// MQA, GQA, MHA: the key/value heads, k after QK-norm and RoPE. [1, n, H_kv, d] each (H_kv 1 for
// MQA, model.kv_heads for GQA, H for MHA).
struct GqaCache {
  at::Tensor k, v;
};

// CCQA: the keys after the whole prologue (steps 3-7: convolutions, qk-mean, norm, temperature,
// RoPE) and the values after the shift, [1, n, H_kv, d_h] each; plus what the next token's
// prologue reads of earlier tokens (a fixed size, not per token):
struct CcqaCache {
  at::Tensor k, v;
  // The last K-1 inputs of each convolution, oldest first ([1, K-1, channels]; zeros before the
  // first token, which is the convolutions' left padding): conv1's input [q0 ; k0] and conv2's
  // input, conv1's output. Query and key channels apart, as the layer stores its convolutions.
  at::Tensor conv1_q, conv1_k, conv2_q, conv2_k;
  // The last token's value projection x W_v ([1, 1, H_kv d_h]; zeros before the first token):
  // the value shift's second half of the next token.
  at::Tensor v0_last;
};

// MLA: the normalised key/value latent c_kv and the shared RoPE key k_r (after RoPE), packed
// as one key of one head, [1, n, 1, d_c + d_r] = [c_kv ; k_r]; its first d_c channels are also
// the values. The up-projections are absorbed into the query and the output (attention.h).
struct MlaCache {
  at::Tensor latent;
};

using AttentionCache = std::variant<GqaCache, CcqaCache, MlaCache>;

// Tokens held (0 when empty) and the bytes of the per-token tensors (k/v, c_kv/k_r; not CCQA's
// fixed convolution and shift state).
int64_t cached_tokens(const AttentionCache& cache);
int64_t cached_bytes(const AttentionCache& cache);

// cat([old, fresh], dim 1), or fresh when old is undefined (an empty cache).
at::Tensor append_tokens(const at::Tensor& old, const at::Tensor& fresh);

// The caches of B sequences decoded together (model/decode_batch.h), preallocated so that a
// decode step has the same shapes whatever the tokens: each per-token tensor of the types above
// as [B, capacity, ...] (row b, slot i: the i-th token row b cached in this layer instance), the
// fixed per-sequence state (CCQA's convolution histories, its last value projection) as
// [B, ...]. Each tensor is allocated, zeros, when the first token reaches it (its shape is what
// the layer computes); zeros are also the empty state. Every later write is in place.
struct CacheRows {
  AttentionCache tensors;  // the alternative of the layer's type (AttentionImpl::empty_cache)
  at::Tensor count;        // [B] int64: the slots of each row that hold its tokens
  int64_t capacity = 0;    // slots per row
};

// The slots for fresh [B, ...] (one token a row): [B, capacity, ...] zeros when undefined.
void allocate_slots(at::Tensor& slots, const CacheRows& rows, const at::Tensor& fresh);
// fresh [B, ...] (one token a row) into slot count[b] of each row of slots [B, capacity, ...]:
// every row writes (a row whose count does not advance leaves a value that the next write
// replaces and no read sees).
void put_rows(at::Tensor& slots, const CacheRows& rows, const at::Tensor& fresh);
// state [B, ...] becomes fresh where write [B] (bool) is true; zeros before the first write.
void keep_where(at::Tensor& state, const at::Tensor& fresh, const at::Tensor& write);
// The fixed state of each row, zeros before its first token: state allocated as zeros like
// `like` [B, ...] when undefined.
const at::Tensor& state_or_zeros(at::Tensor& state, const at::Tensor& like);
// [B, span] bool: slot j of row b is read by its new token, j <= count[b] (its cached tokens
// and the one just put).
at::Tensor visible_slots(const CacheRows& rows, int64_t span);
// count += write ([B] bool).
void advance_rows(CacheRows& rows, const at::Tensor& write);
// Row `row` holds what `one` (a one-sequence cache of the same type) holds: its tokens in slots
// [0, n), its fixed state; whatever the row held before is dropped.
void load_row(CacheRows& rows, int64_t row, const AttentionCache& one);
// Tokens held over all rows (sum of count: reads the device), and their bytes.
int64_t rows_tokens(const CacheRows& rows);
int64_t rows_bytes(const CacheRows& rows);
// Bytes allocated for the per-token tensors (B x capacity slots).
int64_t rows_allocated_bytes(const CacheRows& rows);

}  // namespace hydra::model
