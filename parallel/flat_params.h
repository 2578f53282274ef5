// NOT USED YET: the views start at any element offset, and cuBLAS runs unaligned operands on
// its slow fallback kernels (the `small` step went from 86 to 152 ms on an H200). Before the
// optimizer uses this again, each slot must start at an aligned offset (a padded layout).
//
// The parameters' values and gradients as views of two flat buffers laid out in the flat
// space's order (parallel/flat_layout.h), as Megatron's contiguous gradient buffer does. Then
// moving gradients into the optimizer's fp32 space, the updated weights back, and zeroing the
// gradients are one kernel each instead of one per parameter (about 300 launches each for
// `small`), and autograd accumulates every micro-batch's gradient in place into the buffer.
//
// After flatten_params() each parameter's .grad is a view that must stay: autograd adds into
// it (a defined .grad is accumulated in place when no graph of the gradient is recorded), so
// zero it with zero_flat_grads(), never by resetting .grad (Module::zero_grad() sets it to
// undefined; the next backward would then allocate new tensors the optimizer would not see —
// gather_flat notices and falls back to one copy per parameter, and the optimizer's
// zero_grad() refuses).
#pragma once

#include <ATen/core/Tensor.h>

#include "parallel/flat_layout.h"

namespace hydra::parallel {

// Re-points every parameter's data at a view of one new buffer (values copied) and gives it a
// zeroed .grad that is a view of a second buffer, both in layout order. All parameters must
// share one dtype and device. Parameters keep their identity (set_data), so modules, hooks
// and gradient accumulators still refer to them.
void flatten_params(const FlatLayout& layout, const NamedParams& params);

// The elements `range` of the parameters' values or gradients as one 1-d tensor (a view,
// writable), when they lie back to back in one buffer in layout order (flatten_params made
// them so and nothing has replaced a tensor since); undefined otherwise.
at::Tensor flat_span(const FlatLayout& layout, const NamedParams& params, const Range& range, Source what);

// Sets every gradient to zero, keeping the views. Refuses (RuntimeFailure) parameters whose
// .grad no longer views the flat buffer.
void zero_flat_grads(const FlatLayout& layout, const NamedParams& params);

}  // namespace hydra::parallel
