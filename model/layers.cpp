#include "model/layers.h"

#include <torch/types.h>

#include "model/fused_ops.h"
#include "model/same_input_projections.h"

namespace hydra::model {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const bool low_precision = x.scalar_type() == torch::kHalf || x.scalar_type() == torch::kBFloat16;
  const torch::Tensor xf = low_precision ? x.to(torch::kFloat) : x;
  const torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (low_precision ? normed.to(x.scalar_type()) : normed) * weight;
}

torch::Tensor head_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size,
                            double eps) {
  // [..., H*hs] -> [..., H, hs]; the weight [H*hs] -> [H, hs] lines up head by head.
  std::vector<int64_t> split(x.sizes().begin(), x.sizes().end() - 1);
  split.push_back(-1);
  split.push_back(head_size);
  const torch::Tensor w = weight.view({-1, head_size});
  return rms_norm(x.view(split), w, eps).view(x.sizes());
}

RMSNormImpl::RMSNormImpl(int64_t size, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({size}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) { return fused_rms_norm(x, weight, eps); }

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  const int64_t D = x.size(-1);
  const int64_t half = D / 2;
  const auto angle_type = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const auto opts = torch::TensorOptions().dtype(angle_type).device(x.device());
  // inv_freq_i = theta^(-2i/D), i < D/2.
  const torch::Tensor inv_freq = torch::pow(theta, -torch::arange(0, half, opts) * (2.0 / static_cast<double>(D)));
  // [B, S, 1, D/2]: one angle per token and frequency, shared by the heads.
  const torch::Tensor angles = positions.to(angle_type).unsqueeze(-1).unsqueeze(-1) * inv_freq;
  const torch::Tensor cos = torch::cos(angles).to(x.scalar_type());
  const torch::Tensor sin = torch::sin(angles).to(x.scalar_type());
  const torch::Tensor x1 = x.narrow(-1, 0, half);
  const torch::Tensor x2 = x.narrow(-1, half, half);
  // rotate_half(x) = [-x2, x1]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin).
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

LayerSharding MlpImpl::sharding(const Dims& m) {
  return {{{"w_gate", m.E, m.F, ShardRole::kColumn, 1, m.init_std},
           {"w_up", m.E, m.F, ShardRole::kColumn, 1, m.init_std},
           {"w_down", m.F, m.E, ShardRole::kRow, 1, m.out_std}},
          {}};
}

MlpImpl::MlpImpl(const Dims& dims, const ProjectionFactory& factory) {
  const auto specs = sharding(dims).projections;
  w_gate = register_module("w_gate", make_projection(specs, "w_gate", factory));
  w_up = register_module("w_up", make_projection(specs, "w_up", factory));
  w_down = register_module("w_down", make_projection(specs, "w_down", factory));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  const std::vector<torch::Tensor> gate_up = project_same_input(x, same_input_group());
  return w_down->forward(fused_swiglu(gate_up[0], gate_up[1]));
}

}  // namespace hydra::model
