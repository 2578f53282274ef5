// CCQA's causal convolutions in one decode step of B rows (model/attention_decode_rows.cpp):
// each row's output over its K-1 previous inputs and its new one, the history moving on by one
// input where the row writes. On CUDA in bfloat16 or float32 one kernel (kernels/decode_conv.h);
// elsewhere the unfused ops (cat, the layer's conv, keep_where), which are also its reference in
// tests.
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::model {

struct CausalConvImpl;

// history [B, K-1, C] (zeros allocated at the first step: the forward's left padding), x
// [B, 1, C], write [B] bool. Returns the new outputs [B, 1, C].
at::Tensor convolve_rows(CausalConvImpl& conv, at::Tensor& history, const at::Tensor& x, const at::Tensor& write);

}  // namespace hydra::model
