// The small pieces every layer uses (docs/MODEL.md, "Notation" and "Layer"): RMSNorm, the
// per-head RMSNorm of attention outputs, rotate-half RoPE over explicit positions, and the
// SwiGLU MLP. The free functions below are the reference formulas, written as the spec reads;
// the modules run their fused counterparts (fused_ops.h: one autograd node each, the same
// numbers), and tests and benchmarks compare the two.
#pragma once

#include <torch/nn/module.h>

#include "model/dims.h"
#include "model/projection.h"

namespace hydra::model {

// x / sqrt(mean(x^2) + eps) * weight over the last dimension (weight's size). Half and
// bfloat16 inputs are normalised in float32 and cast back.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// RMSNorm over each head's own channels of x [..., H_local * head_size] with a weight of
// H_local * head_size entries: per head so that a head-sharded tensor needs no communication.
torch::Tensor head_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size,
                            double eps);

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // fused_rms_norm
  torch::Tensor weight;  // initialised to 1
  double eps;
};
using RMSNorm = std::shared_ptr<RMSNormImpl>;

// Rotate-half (NeoX) RoPE over the last dimension D (even) of x [B, S, heads, D]:
// channel i < D/2 pairs with i + D/2, angle = position * theta^(-2i/D). positions [B, S]
// (int64) are the tokens' original positions, so a Mixture-of-Depths subsequence keeps them.
// Angles are computed in float64 for float64 inputs and in float32 otherwise.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta);

// SwiGLU: W_down(silu(W_gate x) * W_up x), width F; the gate is fused_swiglu. W_gate/W_up column-parallel, W_down
// row-parallel; W_down gets the depth-scaled init (docs/MODEL.md "Init").
struct MlpImpl : torch::nn::Module {
  MlpImpl(const Dims& dims, const ProjectionFactory& factory);
  torch::Tensor forward(const torch::Tensor& x);
  static LayerSharding sharding(const Dims& dims);
  // W_gate and W_up take the same input (project_same_input; pack_same_input_weights).
  std::vector<ProjectionImpl*> same_input_group() { return {w_gate.get(), w_up.get()}; }
  Projection w_gate, w_up, w_down;
};
using Mlp = std::shared_ptr<MlpImpl>;

}  // namespace hydra::model
