// Several projections of one input, y_i = x W_i^T, as one autograd node.
//
// Why: when x feeds several projections (q, k and v; the MLP's gate and up), autograd adds the
// input gradients dx_i = dy_i W_i pairwise, each add a separate elementwise pass over x's
// gradient (three reads and a write of an activation-sized tensor: about 160 such adds were
// 2.2 ms of a 63 ms step on small). This node's backward sums them inside the matrix products
// instead: dx = dy_1 W_1, then dx += dy_i W_i as addmm with beta 1 (the product's epilogue
// reads dx once). The forward and the weight gradients are the products autograd would run.
#pragma once

#include <vector>

#include <torch/types.h>

#include "model/projection.h"

namespace hydra::model {

// {p->forward(x) for p in projections}. Fused as above for two or three projections that are
// all a plain x W^T (ProjectionImpl::plain_weight); otherwise each runs its own forward and
// autograd sums.
std::vector<torch::Tensor> project_same_input(const torch::Tensor& x, const std::vector<ProjectionImpl*>& projections);

}  // namespace hydra::model
