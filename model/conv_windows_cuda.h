// CCQA's depthwise conv1 with its output unfolded into conv2's windows, as one differentiable
// op on kernels/conv_windows.h (CUDA build only): the CUDA half of causal_conv_products.cpp's
// conv2_operand, whose unfused ops are its reference in tests.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace hydra::model {

// conv2_operand (causal_conv_products.h) of x [B, S, C] (float32 or bfloat16; a column block of a
// wider tensor is fine), weight [C, 1, K] and bias [C] of one dtype (float32 or bfloat16):
// [C / g, B S, g K + bias_columns] in x's dtype (conv1's output rounded to it), differentiable in
// x, weight and bias; nullopt when the kernel does not take these tensors (not CUDA, other
// dtypes or shapes).
std::optional<at::Tensor> conv2_operand_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                             int64_t g, int64_t bias_columns);

}  // namespace hydra::model
