// Tensors to kernels/decode_conv.h's launcher: the CUDA half of decode_conv.cpp (CUDA build only).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace hydra::model {

// The fused step's outputs [B, 1, C] (history updated in place), or nullopt (nothing written)
// when the kernel does not take these tensors: not CUDA, mixed or other dtypes, a shape too large.
std::optional<at::Tensor> convolve_rows_cuda(const at::Tensor& weight, const at::Tensor& bias, int64_t group_size,
                                             at::Tensor& history, const at::Tensor& x, const at::Tensor& write);

}  // namespace hydra::model
