// Cross-key checks of a model config that the schema's per-key ranges cannot express.
// Throws common::ConfigError naming the keys involved.
#pragma once

#include "model/config.h"

namespace hydra::model {

void check_model_config(const ModelConfig& config);

// What tensor parallelism of degree tp (parallel.tp) needs of a valid config: tp divides
// model.heads, and the key/value heads of every gqa (model.kv_heads) and mha (model.heads)
// layer, which split with the query heads (MQA's one head and CCQA's are replicated instead).
void check_tensor_parallel(const ModelConfig& config, int tp);

}  // namespace hydra::model
