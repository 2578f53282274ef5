// Cross-key checks of a model config that the schema's per-key ranges cannot express.
// Throws common::ConfigError naming the keys involved.
#pragma once

#include "model/config.h"

namespace hydra::model {

void check_model_config(const ModelConfig& config);

}  // namespace hydra::model
