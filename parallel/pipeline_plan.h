// Which layers each pipeline stage holds. Stages are contiguous runs of layers; with MoR on
// (recursions > 1) a macro-block's layers run again after its router, so stages are made of
// whole macro-blocks. Pure arithmetic on the config: no tensors, no communication.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/stage_layers.h"

namespace hydra::parallel {

// The parameters each stage of `plan` holds: its layers, plus the embedding on the first
// stage and the final norm and head (with tied embeddings: the copy of the embedding, which
// a single stage does not have) on the last. The balance the planner minimises.
std::vector<int64_t> stage_params(const model::ModelConfig& config, const std::vector<model::StageLayers>& plan);

// `stages` stages. layers_per_stage: parallel.pp_layers, the number of layers of each stage
// (empty: chosen to minimise the largest stage's parameter count). Throws ConfigError naming
// parallel.pp or parallel.pp_layers when the split is impossible: more stages than units
// (layers, or macro-blocks with MoR), a list of the wrong length or sum, an empty stage, or a
// stage boundary inside a macro-block with MoR on.
std::vector<model::StageLayers> plan_pipeline_stages(const model::ModelConfig& config, int stages,
                                                     const std::vector<int>& layers_per_stage = {});

}  // namespace hydra::parallel
