// The layers a pipeline stage holds (ModelOptions::stage; parallel/pipeline_plan.h plans them).
#pragma once

namespace hydra::model {

// Global layer indices [first, end), a layer's index being block * pattern.size() + position.
// With MoR on (recursions > 1) a macro-block's layers run again after its router, so a stage
// holds whole macro-blocks. The default: every layer.
struct StageLayers {
  int first = 0;
  int end = -1;  // -1: through the last layer
};

}  // namespace hydra::model
