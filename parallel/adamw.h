// AdamW over a range of the flat parameter space, in fp32 whatever the model's dtype: the
// master weights, first and second moments of the elements this rank owns. With one data-
// parallel rank (or ZeRO stage 0) the range is everything; ZeRO 1/2 give each rank its
// shard_range. The update is PyTorch's AdamW (decoupled decay, bias-corrected moments):
//   p *= 1 - lr * wd * decay;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// where g is the gradient times the step's clip factor (parallel/step_gate.h).
//
// Nothing here reads the device on the host: whether a step applies (a finite loss and
// gradient norm), the clip factor and the step count t are device tensors, so that a step
// can be queued without waiting for the previous one (and captured in a CUDA graph later).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "parallel/flat_layout.h"
#include "parallel/step_gate.h"

namespace hydra::parallel {

struct AdamWHyper {
  // 0-dim fp64, on the master's device or the CPU: a tensor, so that a step captured in a CUDA
  // graph (train/step_graph.h) reads each step's value from the schedule.
  at::Tensor lr;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct AdamWState {
  Range range;               // the flat elements this state covers
  at::Tensor master;         // fp32 [range.size()] (fp64 when the parameters are fp64: tests)
  at::Tensor exp_avg;        // m
  at::Tensor exp_avg_sq;     // v
  at::Tensor decay_mask;     // uint8: 1 where weight decay applies, else 0 (a byte, not the master's 4)
  at::Tensor step;           // fp64 0-dim on the master's device: steps applied (bias correction)
};

// Where and in which dtype the optimizer's flat buffers live: fp32 on the parameters' device
// whatever their dtype, fp64 when the parameters are fp64 (tests against a float64 reference).
at::TensorOptions master_options(const NamedParams& params);

// Master weights start as the parameters' current values; moments and the step count at zero.
AdamWState make_adamw_state(const FlatLayout& layout, const NamedParams& params, const Range& range);

// The device scalars of one update (0-dim, in the master's dtype), worked out once per step
// for every state stepped together: the states of one optimizer hold the same step count
// (all start at 0, all advance together, a checkpoint sets them all). On a skipped step the
// moments' betas are 1, decay and step size 0: every element becomes x * 1 + 0.
struct AdamWUpdate {
  at::Tensor apply;          // fp64: 1 applied, 0 skipped (what the step counts advance by)
  at::Tensor finite;         // the gate's flag: the gradient of a skipped step reads as 0
  at::Tensor clip_factor;    // the gradient is used times this
  at::Tensor keep1, keep2;   // beta1, beta2 (1 when skipped)
  at::Tensor decay;          // lr * weight_decay (0 when skipped)
  at::Tensor neg_step_size;  // -lr / (1 - beta1^t) (0 when skipped)
  at::Tensor bias2_sqrt;     // sqrt(1 - beta2^t)
  at::Tensor scalars;        // the six above from clip_factor to bias2_sqrt, packed in that order (the fused kernel)
};
// `steps_taken`: the count before this step (AdamWState::step); `like`: the master's options.
AdamWUpdate plan_adamw_update(const at::Tensor& steps_taken, const AdamWHyper& hyper, const StepGate& gate,
                              const at::TensorOptions& like);

// One update with the reduced gradient of the same range, as `update` says: the gradient is
// used times the clip factor; on a skipped step master, moments and step count stay bitwise
// as they were (the gradient may hold NaN or inf: it never reaches the state).
void adamw_apply(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper, const AdamWUpdate& update);

// The same update with the gradient read from the parameters' own .grad over state.range (a
// missing gradient reads as 0) and the updated weights written back into the parameters in
// their dtype: one data-parallel rank, which keeps no flat gradient (zero_optimizer.h).
// CUDA, fp32 or bf16 parameters: one fused pass (parallel/optimizer_kernels.h); elsewhere the
// range is gathered into a temporary, updated with adamw_apply and scattered back.
void adamw_apply_params(AdamWState& state, const FlatLayout& layout, const NamedParams& params,
                        const AdamWHyper& hyper, const AdamWUpdate& update);

// plan_adamw_update from the state's own count, then adamw_apply.
void adamw_step(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper, const StepGate& gate);
// The same with a gate that always applies and does not clip.
void adamw_step(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper);

// The step count on the host: a device read, for checkpoints only (a save waits anyway).
int64_t adamw_steps(const AdamWState& state);
void set_adamw_steps(AdamWState& state, int64_t steps);

}  // namespace hydra::parallel
