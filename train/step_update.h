// The update of one training step after backward and the gradient reduction, queued on the
// device without reading anything on the host: the global gradient norm, the gate that
// clips to train.clip and skips a non-finite step (parallel/step_gate.h), AdamW and the new
// weights into the parameters. Returns the step's numbers for the host to read late
// (train/step_numbers.h). Collective over the run's groups, like the norm and the step.
#pragma once

#include <ATen/core/Tensor.h>

#include "parallel/adamw.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/parallel_context.h"

namespace hydra::train {

// `loss_sum`: fp64 [2], this step's LM and aux loss, already summed over stages and averaged
// over dp (the same on every rank). Returns pack_step_numbers(loss_sum, norm, applied).
at::Tensor update_step(parallel::DataParallelOptimizer& optim, const parallel::ParallelContext& ctx,
                       const at::Tensor& loss_sum, const parallel::AdamWHyper& hyper, double clip);

}  // namespace hydra::train
