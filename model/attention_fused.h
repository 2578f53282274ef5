// The fused (CUDA-kernel) attention core: same contract as causal_attention
// (model/attention_core.h) for CUDA tensors, computed by the latent flash attention kernels
// (kernels/latent_attention.h) with a custom autograd Function. CUDA build only.
//
// Precision: the kernels take bf16. Under CUDA autocast the inputs are cast to bf16 (as
// autocast would cast SDPA's); plain bf16 inputs run as they are. Other dtypes, head sizes
// other than 16/32/64 and q/v head sizes that differ fall back to causal_attention.
#pragma once

#include <ATen/core/Tensor.h>

namespace hydra::model {

// value_shift: v is CCQA's unshifted x W_v per head and the attention reads it through the value
// shift (shift_values, attention_core.h); the gradient returned for v is that of the unshifted v.
at::Tensor causal_attention_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  bool value_shift = false);

// True when causal_attention_fused runs the kernels (not the fallback) for these inputs.
bool fused_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace hydra::model
