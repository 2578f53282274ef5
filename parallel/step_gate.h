// Whether and how much of a step's gradient the optimizer applies, decided on the device:
// the host queues the update without reading the loss or the gradient norm, so it never
// waits for the GPU between steps (docs/ARCHITECTURE.md, "One step"). The same loss and norm
// on every rank (both are reduced before) give the same decision everywhere.
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::parallel {

struct StepGate {
  at::Tensor finite;       // bool 0-dim: false skips the update (non-finite loss or norm)
  at::Tensor clip_factor;  // fp64 0-dim: the gradient is used times this (1: not clipped)
};

// finite = isfinite(loss) & isfinite(grad_norm); clip_factor = clip / (grad_norm + 1e-6)
// where grad_norm > clip > 0, else 1 (the rule the host applied before: a norm at or below
// the threshold is left alone). `loss` and `grad_norm` are 0-dim or one-element tensors.
StepGate make_step_gate(const at::Tensor& loss, const at::Tensor& grad_norm, double clip);

// A gate that always applies and does not clip, on `options`' device.
StepGate always_apply(const at::TensorOptions& options);

}  // namespace hydra::parallel
