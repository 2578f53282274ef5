// Sizes the launcher reports for a model config without building it: parameter counts by
// type, effective depth, KV-cache bytes and training FLOPs per token (`hydra info --json`).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model/config.h"

namespace hydra::model {

struct ModelStats {
  int64_t vocab_padded = 0;
  int64_t params_total = 0;  // as the model holds them: the vocabulary padded to vocab_padded rows
  int64_t params_stored = 0;  // without the padding rows: what checkpoints store and hydra train logs
  int64_t params_non_embedding = 0;
  std::map<std::string, int64_t> params_by_type;  // mqa, gqa, mha, ccqa, mla, mlp, embedding, routers, norms
  int effective_layers = 0;
  int64_t kv_cache_bytes_per_token = 0;  // bf16
  double flops_per_token = 0;            // training (forward + backward)
};

// tp: tensor-parallel size (the vocabulary pads to a multiple of 128 * tp).
ModelStats compute_model_stats(const ModelConfig& config, int seq_len, int tp = 1);

// Parameters of the layer at `position` within a macro-block: attention (projections, convs,
// temperatures, its norms), the two pre-norms, the MLP and a MoD router. The pipeline
// planner balances stages with it.
int64_t layer_params(const ModelConfig& config, int position);

// Forward FLOPs of one layer of attention `type` (and its MLP) run densely on one sequence of
// n tokens: 2 per weight per token and the causal attention's pairs (docs/MODEL.md, "Counting").
double layer_forward_flops(const ModelConfig& config, const std::string& type, int64_t n);

// bf16 bytes one token leaves in the KV cache of one layer of attention `type`.
int64_t layer_kv_bytes_per_token(const ModelConfig& config, const std::string& type);

// Whether the layer at `position` within a macro-block has a MoD router (mod.enabled, mod.layers).
bool is_mod_layer(const ModelConfig& config, int position);

}  // namespace hydra::model
