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

// conv2's left operand: the depthwise conv1 (weight [C, 1, K], bias [C]) of x [B, S, C] as the
// K-tap windows conv2 reads, grouped as conv2's groups of g channels: [C / g, B S, g K +
// bias_columns], row (b S + t) of group j holding, at i K + m, conv1's output for channel j g + i
// at token t - K + 1 + m (zero before the first token: conv2 pads with zeros, not with conv1's
// bias), then bias_columns (0 or 8, at most g) entries of 1 / bias_columns, which carry conv2's
// bias into the product. On CUDA one kernel each way (model/conv_windows_cuda.h); elsewhere the
// products above, padded, unfolded and transposed.
at::Tensor conv2_operand(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, int64_t g,
                         int64_t bias_columns);

// conv2(conv1(x)) of CCQA's pair: conv1 depthwise (w1 [C, 1, K], b1), conv2 grouped (w2 [C, g,
// K], b2): one batched product of conv2_operand with conv2's weight and bias rows.
at::Tensor causal_conv_pair_products(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2);

}  // namespace hydra::model
