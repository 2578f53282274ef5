// The sizes docs/MODEL.md derives from a ModelConfig (head size, latent sizes, SwiGLU width, init
// scales), computed in one place so that the modules and the analytic counts in model_info
// cannot disagree. Header-only and torch-free: model_info.cpp and the launcher use it cheaply.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "model/config.h"

namespace hydra::model {

// Whether model.pattern has a layer of `type` ("ccqa", "gqa", ...).
inline bool has_layer_type(const ModelConfig& c, const std::string& type) {
  return std::find(c.pattern.begin(), c.pattern.end(), type) != c.pattern.end();
}

// Key/value heads under tensor parallelism of `tp` ranks: split with the query heads when tp
// divides them, else whole (replicated) on every rank. The layers follow it (CcqaAttention::
// kv_split, the grouped kinds' mqa head) and so does the memory estimate.
inline bool kv_heads_split(int64_t kv_heads, int tp) { return kv_heads % tp == 0; }
inline int64_t kv_heads_per_rank(int64_t kv_heads, int tp) {
  return kv_heads_split(kv_heads, tp) ? kv_heads / tp : kv_heads;
}

struct Dims {
  int64_t E = 0;       // model width
  int64_t H = 0;       // query heads
  int64_t d = 0;       // head size E / H
  int64_t F = 0;       // SwiGLU width round_up(mlp_ratio * E, 64)
  // MQA, GQA and MHA: H query heads and grouped_kv_heads(type, config) key/value heads of d.
  // CCQA (compression C) attends with Hc query heads and Hkv key/value heads of size dh:
  // compress head_dim: Hc = H, Hkv = H_kv, dh = d / C; compress heads: Hc = H / C,
  // Hkv = ceil(H_kv / C), dh = d. Query latent Lq = Hc dh (E / C either way), key/value
  // latent Lk = Hkv dh, convolution kernel K.
  int64_t Hc = 0;
  int64_t Hkv = 0;
  int64_t dh = 0;
  int64_t Lq = 0;
  int64_t Lk = 0;
  int64_t K = 0;
  // MLA: latent sizes d_c = d_cq = latent_ratio * E, decoupled RoPE size d_r = d / 2.
  int64_t dc = 0;
  int64_t dr = 0;
  int64_t layers_per_block = 0;  // pattern size
  int64_t effective_depth = 0;   // L = pattern size * macro_blocks * recursions
  double init_std = 0.02;        // every linear and embedding weight
  double out_std = 0.02;         // W_o and W_down: init_std / sqrt(2 L)
};

// The largest CCQA head size the fused prologue kernel takes in the model: above it the layer
// runs its convolutions as cuBLAS products and steps 4-7 as the mix kernel (model/
// ccqa_prologue_fused.cpp says why), which saves more for the backward (activation_memory.cpp).
inline constexpr int64_t kCcqaFusedPrologueMaxHeadDim = 32;

// Every value model.pattern takes, as error messages list them.
inline constexpr const char* kAttentionTypes = "mqa|gqa|mha|ccqa|mla";

// The grouped-query family (docs/MODEL.md "GQA"): one layer, GqaAttention, with H query heads of
// size d and a number of key/value heads that the type names: mqa 1, gqa model.kv_heads, mha H.
inline bool is_grouped_type(const std::string& type) { return type == "mqa" || type == "gqa" || type == "mha"; }
inline int64_t grouped_kv_heads(const std::string& type, const ModelConfig& c) {
  if (type == "mqa") return 1;
  if (type == "gqa") return c.kv_heads;
  if (type == "mha") return c.heads;
  return 0;
}

inline int64_t round_up(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }

// The vocabulary as the model stores it: a multiple of 128 * tp, so that every
// tensor-parallel shard of the embedding and LM head has the same, aligned size.
inline int64_t padded_vocab(int64_t vocab_size, int tp) { return round_up(vocab_size, 128LL * tp); }

// Tokens a top-k router lets through out of n (MoD): max(1, floor(capacity * n)).
// The 1e-9 keeps 0.75 * 32 = 24 from flooring to 23 through representation error.
inline int64_t mod_capacity_tokens(double capacity, int64_t n) {
  const auto k = static_cast<int64_t>(std::floor(capacity * static_cast<double>(n) + 1e-9));
  return k < 1 ? 1 : (k > n ? n : k);
}

// Tokens that MoR recursion r (1-based, r >= 2) takes out of a sequence of S: ceil(S (R-r+1) / R).
inline int64_t mor_capacity_tokens(int64_t S, int recursion, int R) {
  return (S * (R - recursion + 1) + R - 1) / R;
}

inline Dims model_dims(const ModelConfig& c) {
  Dims m;
  m.E = c.dim;
  m.H = c.heads;
  m.d = c.heads > 0 ? c.dim / c.heads : 0;
  // mlp_ratio * E is rounded to the nearest integer first (3.5 * 896 is exact in decimal but
  // not always in binary), then up to a multiple of 64.
  m.F = round_up(static_cast<int64_t>(std::llround(c.mlp_ratio * c.dim)), 64);
  const int64_t C = c.ccqa.compression;
  if (c.ccqa.compress == "heads") {
    m.Hc = C > 0 ? m.H / C : 0;
    m.Hkv = C > 0 ? (c.kv_heads + C - 1) / C : 0;
    m.dh = m.d;
  } else {
    m.Hc = m.H;
    m.Hkv = c.kv_heads;
    m.dh = C > 0 ? m.d / C : 0;
  }
  m.Lq = m.Hc * m.dh;
  m.Lk = m.Hkv * m.dh;
  m.K = c.ccqa.conv_kernel;
  m.dc = static_cast<int64_t>(std::llround(c.mla.latent_ratio * c.dim));
  m.dr = m.d / 2;
  m.layers_per_block = static_cast<int64_t>(c.pattern.size());
  m.effective_depth = m.layers_per_block * c.macro_blocks * c.mor.recursions;
  m.init_std = c.init_std;
  m.out_std = m.effective_depth > 0 ? c.init_std / std::sqrt(2.0 * static_cast<double>(m.effective_depth))
                                    : c.init_std;
  return m;
}

}  // namespace hydra::model
