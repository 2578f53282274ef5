// CUDA glue of linear_cross_entropy (model/linear_cross_entropy.cpp): one chunk's softmax cross
// entropy by the fused kernel, and the bf16 weight gradient summed into float32 by one cuBLAS
// GEMM (kernels/cross_entropy.h). CUDA build only; the caller checks the *_applies functions.
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::model {

// True for a CUDA chunk of bf16 or float32 logits [c, V] with unit column stride.
bool fused_cross_entropy_applies(const at::Tensor& logits);

// logits [c, V] -> loss_rows [c] (float32: lse - logit[target], 0 for ignored targets); with
// row_scale ([c] float32, 0 for ignored rows) the logits are overwritten with the gradient
// (softmax - onehot) * row_scale in their dtype; row_scale undefined: the loss alone.
void cross_entropy_chunk_fused(at::Tensor& logits, const at::Tensor& targets, int64_t vocab_valid,
                               const at::Tensor& row_scale, at::Tensor& loss_rows);

// True when acc is float32 and g, h_c are bf16 CUDA tensors with unit column stride.
bool fused_weight_grad_applies(const at::Tensor& acc, const at::Tensor& g, const at::Tensor& h_c);

// acc [V, E] float32 += g^T h_c (g [c, V], h_c [c, E] bf16), the products unrounded.
void accumulate_weight_grad_fused(at::Tensor& acc, const at::Tensor& g, const at::Tensor& h_c);

}  // namespace hydra::model
