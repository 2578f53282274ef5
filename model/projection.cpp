#include "model/projection.h"

#include <algorithm>

#include <torch/types.h>
#include <torch/utils.h>

#include "common/errors.h"

namespace hydra::model {

const char* to_string(ShardRole role) {
  switch (role) {
    case ShardRole::kColumn: return "column";
    case ShardRole::kRow: return "row";
    case ShardRole::kReplicated: return "replicated";
  }
  return "?";
}

torch::Tensor init_projection_weight(const ProjectionSpec& spec) {
  torch::NoGradGuard no_grad;
  const int64_t rows = spec.init_rows > 0 ? std::min(spec.init_rows, spec.out) : spec.out;
  if (rows == spec.out) return torch::empty({spec.out, spec.in}).normal_(0.0, spec.init_std);
  torch::Tensor w = torch::zeros({spec.out, spec.in});
  w.narrow(0, 0, rows).normal_(0.0, spec.init_std);  // the leading rows: contiguous, same draws
  return w;
}

LinearProjection::LinearProjection(const ProjectionSpec& spec) {
  weight = register_parameter("weight", init_projection_weight(spec));
  if (spec.bias) {
    bias = register_parameter("bias", torch::full({spec.out}, spec.bias_init));
  }
}

torch::Tensor LinearProjection::forward(const torch::Tensor& x) {
  // at::linear picks addmm for 2-D inputs and matmul otherwise; bias may be undefined.
  return torch::linear(x, weight, bias);
}

ProjectionFactory default_projection_factory() {
  return [](const ProjectionSpec& spec) -> Projection { return std::make_shared<LinearProjection>(spec); };
}

Projection make_projection(const std::vector<ProjectionSpec>& specs, const std::string& name,
                           const ProjectionFactory& factory) {
  for (const auto& spec : specs) {
    if (spec.name == name) return factory(spec);
  }
  HYDRA_CHECK(false, "no projection spec named " << name);
  return nullptr;
}

}  // namespace hydra::model
