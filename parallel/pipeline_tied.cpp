#include "parallel/pipeline_tied.h"

#include <ATen/ATen.h>

namespace hydra::parallel {

bool has_tied_copy(bool tie_embeddings, const ProcessGrid& grid) { return tie_embeddings && grid.shape.pp > 1; }

void sum_tied_embedding_grads(at::Tensor& weight, const ProcessGrid& grid, Communicator& pp) {
  if (!grid.first_stage() && !grid.last_stage()) return;
  const at::Tensor grad = weight.grad();
  const at::Tensor mine = grad.defined() ? grad.contiguous() : at::zeros_like(weight);
  at::Tensor other = at::empty_like(mine);
  const int peer = grid.first_stage() ? grid.shape.pp - 1 : 0;
  pp.exchange(mine, peer, other, peer);
  weight.mutable_grad() = mine + other;
}

}  // namespace hydra::parallel
