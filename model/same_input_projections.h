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
// autograd sums. Where no gradient is recorded (decoding) and the weights are packed (below),
// one product x [W_1; W_2; ...]^T, the outputs its column blocks (views of it).
std::vector<torch::Tensor> project_same_input(const torch::Tensor& x, const std::vector<ProjectionImpl*>& projections);

// Points the weights of `projections` at consecutive row blocks of one new tensor holding their
// values, so that project_same_input computes them with one matrix product instead of one each
// where no gradient is recorded. Why: a decoding step multiplies each layer's input by every
// weight of a group, and at a few rows each product is a short kernel whose launch and tail
// cost as much as its work (three products for q, k, v, two for the MLP's gate and up).
// Nothing else changes: the parameters keep their names, values, dtype, device and
// requires_grad, and the gradient path is the separate products. For a model whose weights no
// longer move (hydra generate calls it after loading and converting the model): anything that
// later gives a weight new storage (Module::to, a checkpoint load that replaces tensors)
// unpacks it, and the products are then separate again. Returns false, changing nothing,
// where a weight is not plain or the weights differ in input width, dtype or device.
bool pack_same_input_weights(const std::vector<ProjectionImpl*>& projections);

}  // namespace hydra::model
