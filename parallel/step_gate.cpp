#include "parallel/step_gate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace hydra::parallel {

StepGate make_step_gate(const at::Tensor& loss, const at::Tensor& grad_norm, double clip) {
  c10::NoGradGuard no_grad;
  const at::Tensor norm = grad_norm.reshape({}).to(at::kDouble);
  StepGate gate;
  gate.finite = at::isfinite(loss.reshape({})).logical_and_(at::isfinite(norm));
  if (clip > 0) {
    // A NaN norm compares false: factor 1, and the step is skipped anyway.
    gate.clip_factor = at::where(norm > clip, clip / (norm + 1e-6), 1.0);
  } else {
    gate.clip_factor = at::ones_like(norm);
  }
  return gate;
}

StepGate always_apply(const at::TensorOptions& options) {
  StepGate gate;
  gate.finite = at::ones({}, options.dtype(at::kBool));
  gate.clip_factor = at::ones({}, options.dtype(at::kDouble));
  return gate;
}

}  // namespace hydra::parallel
