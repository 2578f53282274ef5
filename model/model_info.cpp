// Analytic sizes of a model config; docs/MODEL.md ("Counting") states every formula used here.
// The parameter count must equal the built model's exactly (tests/model/test_model_stats.cpp).
#include "model/model_info.h"

#include <algorithm>

#include "model/dims.h"

namespace hydra::model {
namespace {

int64_t conv_params(const Dims& m) {  // both convolutions, query and key parts, with biases
  const int64_t ch = m.Lq + m.Lk;
  return (ch * m.K + ch) + (ch * m.dh * m.K + ch);
}

// Weights of the attention's projections (the matmuls a token goes through).
int64_t attention_matmul_params(const std::string& type, const ModelConfig& c, const Dims& m) {
  // mqa, gqa, mha: W_q, W_k and W_v of H_kv heads each, W_o
  if (is_grouped_type(type)) return m.E * m.H * m.d + 2 * m.E * grouped_kv_heads(type, c) * m.d + m.H * m.d * m.E;
  if (type == "ccqa") return m.E * m.Lq + 2 * m.E * m.Lk + m.Lq * m.E;
  // mla: W_dq, W_uq, W_qr, W_dkv, W_uk, W_uv, W_kr, W_o
  return m.E * m.dc + m.dc * m.H * m.d + m.dc * m.H * m.dr + m.E * m.dc + 2 * m.dc * m.H * m.d + m.E * m.dr +
         m.H * m.d * m.E;
}

// Attention parameters that are not norm weights: projections, convolutions, temperatures.
int64_t attention_params(const std::string& type, const ModelConfig& c, const Dims& m) {
  int64_t p = attention_matmul_params(type, c, m);
  if (type == "ccqa") p += (c.ccqa.use_convs ? conv_params(m) : 0) + m.Hkv;
  return p;
}

// Norm weights inside an attention: QK/post-mix/latent norms and the per-head output norm.
int64_t attention_norm_params(const std::string& type, const ModelConfig& c, const Dims& m) {
  if (is_grouped_type(type)) return 2 * m.d + m.H * m.d;
  if (type == "ccqa") return (c.ccqa.post_mix_norm ? 2 * m.dh : 0) + m.Lq;
  return 2 * m.dc + m.H * m.d;
}

// bf16 bytes a token leaves in one layer's KV cache.
int64_t kv_bytes(const std::string& type, const ModelConfig& c, const Dims& m) {
  if (is_grouped_type(type)) return 2 * (2 * grouped_kv_heads(type, c) * m.d);  // k, v: H_kv heads of d
  if (type == "ccqa") return 2 * (2 * m.Lk);      // k, v latents (value-shift halves included)
  return 2 * (m.dc + m.dr);                       // c_kv and the shared k_r
}

// Forward FLOPs of one layer run densely on a sequence of n tokens: 2 per weight per token
// for every matmul, the convolutions, and the causal attention (n(n+1)/2 query-key pairs).
double layer_flops(const std::string& type, const ModelConfig& c, const Dims& m, int64_t n) {
  const double tokens = static_cast<double>(n);
  double matmul = static_cast<double>(attention_matmul_params(type, c, m) + 3 * m.E * m.F);
  if (type == "ccqa" && c.ccqa.use_convs) matmul += static_cast<double>((m.Lq + m.Lk) * m.K * (1 + m.dh));
  double per_pair = 0;  // FLOPs per (query, key) pair summed over heads: scores + weighted values
  if (is_grouped_type(type)) per_pair = 2.0 * m.H * (m.d + m.d);  // every query head, whatever H_kv
  if (type == "ccqa") per_pair = 2.0 * m.Hc * (m.dh + m.dh);
  if (type == "mla") per_pair = 2.0 * m.H * ((m.d + m.dr) + m.d);
  return 2.0 * matmul * tokens + per_pair * tokens * (tokens + 1) / 2.0;
}

// One pass of a macro-block over n tokens, MoD routers and capacities applied.
double block_pass_flops(const ModelConfig& c, const Dims& m, int64_t n) {
  double f = 0;
  for (int l = 0; l < static_cast<int>(c.pattern.size()); ++l) {
    if (is_mod_layer(c, l)) {
      f += 2.0 * static_cast<double>(m.E) * n;  // router
      f += layer_flops(c.pattern[l], c, m, mod_capacity_tokens(c.mod.capacity, n));
    } else {
      f += layer_flops(c.pattern[l], c, m, n);
    }
  }
  return f;
}

}  // namespace

int64_t layer_params(const ModelConfig& c, int position) {
  const Dims m = model_dims(c);
  const std::string& type = c.pattern.at(position);
  return attention_params(type, c, m) + attention_norm_params(type, c, m) + 2 * m.E + 3 * m.E * m.F +
         (is_mod_layer(c, position) ? m.E + 1 : 0);
}

ModelStats compute_model_stats(const ModelConfig& config, int seq_len, int tp) {
  const ModelConfig& c = config;
  const Dims m = model_dims(c);
  ModelStats s;
  s.vocab_padded = padded_vocab(c.vocab_size, tp);
  s.effective_layers = static_cast<int>(m.effective_depth);
  auto& by = s.params_by_type;
  for (const char* key : {"mqa", "gqa", "mha", "ccqa", "mla", "mlp", "embedding", "routers", "norms"}) by[key] = 0;

  // Parameters of one macro-block, times the macro-blocks (recursions share them).
  for (int l = 0; l < static_cast<int>(c.pattern.size()); ++l) {
    const std::string& type = c.pattern[l];
    by[type] += c.macro_blocks * attention_params(type, c, m);
    by["norms"] += c.macro_blocks * (attention_norm_params(type, c, m) + 2 * m.E);  // + attn_norm, mlp_norm
    by["mlp"] += c.macro_blocks * 3 * m.E * m.F;
    if (is_mod_layer(c, l)) by["routers"] += c.macro_blocks * (m.E + 1);
    s.kv_cache_bytes_per_token += kv_bytes(type, c, m) * c.macro_blocks * c.mor.recursions;
  }
  by["routers"] += static_cast<int64_t>(c.macro_blocks) * (c.mor.recursions - 1) * (m.E + 1);
  by["norms"] += m.E;  // final norm
  const int64_t vocab_tables = c.tie_embeddings ? 1 : 2;  // the embedding, and the head unless tied
  by["embedding"] = s.vocab_padded * m.E * vocab_tables;
  for (const auto& [key, count] : by) s.params_total += count;
  s.params_non_embedding = s.params_total - by["embedding"];
  s.params_stored = s.params_non_embedding + c.vocab_size * m.E * vocab_tables;

  // Forward FLOPs of one sequence, then per token, then x3 for forward + backward.
  const int64_t S = seq_len > 0 ? seq_len : 1;
  double forward = 0;
  for (int b = 0; b < c.macro_blocks; ++b) {
    forward += block_pass_flops(c, m, S);  // recursion 1: every token
    for (int r = 2; r <= c.mor.recursions; ++r) {
      // The router scores the whole sequence (inactive tokens are masked afterwards).
      forward += 2.0 * static_cast<double>(m.E) * S;
      forward += block_pass_flops(c, m, mor_capacity_tokens(S, r, c.mor.recursions));
    }
  }
  forward += 2.0 * static_cast<double>(m.E) * static_cast<double>(s.vocab_padded) * S;  // LM head
  s.flops_per_token = 3.0 * forward / static_cast<double>(S);
  return s;
}

double layer_forward_flops(const ModelConfig& c, const std::string& type, int64_t n) {
  return layer_flops(type, c, model_dims(c), n);
}

int64_t layer_kv_bytes_per_token(const ModelConfig& c, const std::string& type) {
  return kv_bytes(type, c, model_dims(c));
}

bool is_mod_layer(const ModelConfig& c, int position) {
  return c.mod.enabled && std::find(c.mod.layers.begin(), c.mod.layers.end(), position) != c.mod.layers.end();
}

}  // namespace hydra::model
