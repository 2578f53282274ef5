// The optimizer's fused CUDA kernels (kernels/optimizer_update.h) on LibTorch tensors, where
// they apply: fp32 contiguous tensors on a CUDA device, in the CUDA build. Each function says
// whether it ran; the callers (adamw.cpp, grad_norm.cpp) keep their ATen formulas for every
// other case (the CPU build, fp64 tests), which the gpu tests compare the kernels against.
#pragma once

#include <ATen/core/Tensor.h>

#include "parallel/adamw.h"

namespace hydra::parallel {

// sum(double(x)^2) as an fp64 [1] tensor on x's device; undefined when the kernel does not apply.
at::Tensor fused_sum_of_squares(const at::Tensor& x);

// adamw_apply's element update (not the step count) in one kernel; false when it does not apply.
bool fused_adamw_update(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper,
                        const AdamWUpdate& update);

}  // namespace hydra::parallel
