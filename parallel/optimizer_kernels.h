// The optimizer's fused CUDA kernels (kernels/optimizer_update.h) on LibTorch tensors, where
// they apply: contiguous tensors on a CUDA device (fp32; bf16 too for the sum of squares), in
// the CUDA build. Each function says
// whether it ran; the callers (adamw.cpp, grad_norm.cpp) keep their ATen formulas for every
// other case (the CPU build, fp64 tests), which the gpu tests compare the kernels against.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "parallel/adamw.h"

namespace hydra::parallel {

// The sum over `xs` of sum(double(x)^2), as an fp64 [1] tensor on their device; undefined
// when the kernel does not apply (empty, or not all contiguous fp32 or bf16 on one CUDA device).
at::Tensor fused_sum_of_squares(const std::vector<at::Tensor>& xs);

// adamw_apply's element update (not the step count) in one kernel; false when it does not apply.
bool fused_adamw_update(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper,
                        const AdamWUpdate& update);

// adamw_apply_params' element update (not the step count) in one pass over the parameters'
// .grad and values (contiguous, fp32 or bf16, on the state's CUDA device); false when it does
// not apply.
bool fused_adamw_params(AdamWState& state, const FlatLayout& layout, const NamedParams& params,
                        const AdamWHyper& hyper, const AdamWUpdate& update);

}  // namespace hydra::parallel
