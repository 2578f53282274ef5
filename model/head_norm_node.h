// head_rms_norm (layers.h) as one autograd node: the same arithmetic in the forward, the
// backward written out. LibTorch records eleven nodes for head_rms_norm and runs about fifteen
// kernels in their backward; on the fused CCQA layer, whose kernels take a fraction of a
// millisecond, that host-side cost is most of a call (docs/PERF.md, 2026-11-23, fixed cost).
// Results match head_rms_norm up to float rounding (the same ops in the same types, with the
// gradient's algebra simplified).
#pragma once

#include <torch/types.h>

namespace hydra::model {

// x [..., H * head_size], weight [H * head_size]; returns what head_rms_norm returns.
torch::Tensor head_rms_norm_node(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size, double eps);

}  // namespace hydra::model
