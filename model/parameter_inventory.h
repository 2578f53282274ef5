// Every parameter of a model config by its full name (docs/MODEL.md, "Parameters") and element
// count, without building the model: what `hydra info` and the memory estimate need to know
// which parameters `train.freeze` leaves without gradients and optimizer state. Torch-free
// (hydra_model_info); tests/model/test_parameter_inventory.cpp holds it to the built model's
// named_parameters() for every layer kind.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace hydra::model {

struct ParameterEntry {
  // Where a pipeline stage plan puts it: a global layer index (block x pattern size +
  // position; a macro-block's MoR routers go with its first layer, as the stage planner counts
  // them), or one of these two.
  static constexpr int kFirstStage = -1;  // embed.weight (with tied embeddings the last stage holds a copy)
  static constexpr int kLastStage = -2;   // final_norm.weight, head.weight
  std::string name;
  int64_t elements = 0;  // the whole parameter at tp 1 (the vocabulary padded to 128)
  int layer = 0;
};

// In the order the built model's named_parameters() lists them.
std::vector<ParameterEntry> parameter_inventory(const ModelConfig& config);

}  // namespace hydra::model
