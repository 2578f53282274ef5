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

// New tokens of several sequences in one call (decoding a batch): `length` consecutive tokens of
// one sequence, which its cache takes; a call's runs follow each other in the order given.
struct CacheRun {
  AttentionCache* cache;
  int64_t length;
};

// Tokens held (0 when empty) and the bytes of the per-token tensors (k/v, c_kv/k_r; not CCQA's
// fixed convolution and shift state).
int64_t cached_tokens(const AttentionCache& cache);
int64_t cached_bytes(const AttentionCache& cache);

// cat([old, fresh], dim 1), or fresh when old is undefined (an empty cache).
at::Tensor append_tokens(const at::Tensor& old, const at::Tensor& fresh);

}  // namespace hydra::model
