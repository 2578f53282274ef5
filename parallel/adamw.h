// AdamW over a range of the flat parameter space, in fp32 whatever the model's dtype: the
// master weights, first and second moments of the elements this rank owns. With one data-
// parallel rank (or ZeRO stage 0) the range is everything; ZeRO 1/2 give each rank its
// shard_range. The update is PyTorch's AdamW (decoupled decay, bias-corrected moments):
//   p *= 1 - lr * wd * decay;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#pragma once

#include <ATen/core/Tensor.h>

#include "parallel/flat_layout.h"

namespace hydra::parallel {

struct AdamWHyper {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct AdamWState {
  Range range;               // the flat elements this state covers
  at::Tensor master;         // fp32 [range.size()]
  at::Tensor exp_avg;        // m
  at::Tensor exp_avg_sq;     // v
  at::Tensor decay_mask;     // fp32 1 where weight decay applies, else 0
  int64_t step = 0;          // optimizer steps taken (bias correction)
};

// Master weights start as the parameters' current values; moments at zero.
AdamWState make_adamw_state(const FlatLayout& layout, const NamedParams& params, const Range& range);

// One update with the fp32 gradient of the same range (already reduced and clipped).
void adamw_step(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper);

}  // namespace hydra::parallel
