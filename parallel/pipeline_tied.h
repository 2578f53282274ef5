// Tied embeddings under pipeline parallelism: the first stage's input embedding and the last
// stage's output projection are one parameter held twice (the last stage's copy is marked
// ParamSlot::duplicate). After backward the two stages sum their gradients, so that both
// copies take the same step.
#pragma once

#include <ATen/core/Tensor.h>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace hydra::parallel {

// True where the model's tied embedding is held by two stages (tie_embeddings and pp > 1).
bool has_tied_copy(bool tie_embeddings, const ProcessGrid& grid);

// On the first and last stage: weight.grad = mine + the other stage's (a + b on one, b + a on
// the other: the same bits); a missing gradient counts as zeros. Other stages: nothing.
// Collective between the first and last stage of `pp`.
void sum_tied_embedding_grads(at::Tensor& weight, const ProcessGrid& grid, Communicator& pp);

}  // namespace hydra::parallel
