#include "train/step_update.h"

#include "parallel/grad_norm.h"
#include "parallel/step_gate.h"
#include "train/step_numbers.h"

namespace hydra::train {

at::Tensor update_step(parallel::DataParallelOptimizer& optim, const parallel::ParallelContext& ctx,
                       const at::Tensor& loss_sum, const parallel::AdamWHyper& hyper, double clip) {
  // Collective: the same norm on every rank, so every rank's gate (skip or clip) is the same.
  const at::Tensor norm = parallel::global_grad_norm_tensor(optim.shards(), optim.layout(), optim.params(), ctx);
  // The LM loss decides the skip with the norm (a non-finite aux loss reaches the norm
  // through the gradients).
  const parallel::StepGate gate = parallel::make_step_gate(loss_sum[0], norm, clip);
  optim.step(hyper, gate);
  return pack_step_numbers(loss_sum, norm, gate.finite);
}

}  // namespace hydra::train
