// CCQA's causal convolutions (docs/MODEL.md, CCQA step 3) as tensor products instead of
// conv1d: the K taps of every token side by side (a view of the input padded by K-1 zeros),
// then, per group of g channels, one matrix product [tokens, g K] x [g K, g]; a depthwise
// convolution (g = 1) is a product and a sum over the taps. It is what the fused CCQA path
// runs where the prologue kernels do not take the head size (the `heads` layout at head size
// 128: conv2's groups are whole heads, so 128 x 128 x K weights a head, which cuDNN's grouped
// conv1d ran as several layout conversions and kernels a call): the products go to cuBLAS's
// batched GEMM, and autograd differentiates them. Same result as CausalConvImpl::forward up
// to the order of the sums.
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::model {

// x [B, S, C]; weight [C, g, K] (C / g groups; output channel c reads input channels
// g floor(c / g) .. + g - 1); bias [C]. Output t sees inputs t-K+1 .. t (zeros before 0).
at::Tensor causal_conv_products(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace hydra::model
