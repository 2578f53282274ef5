// The 1F1B pipeline schedule (PipeDream-flush, as in Megatron): each stage runs
// min(stages - stage - 1, m) warm-up forwards, then alternates one forward and one backward,
// then drains the remaining backwards. At most `stages` micro-batches are in flight on a
// stage (activation memory bounded by the pipeline depth, not by m), and the bubble is
// (stages - 1) / m of the step.
//
// Communication: activations go to the next stage and gradients back over the pipeline
// communicator (group rank = stage). Where a stage sends one way and receives the other,
// both go in one Communicator::exchange, so neighbours never wait on each other's sends.
// Every message between two stages has the same shape (micro_batch x seq x dim), known in
// advance, so receives allocate without a size message.
//
// The model stays out of it: the caller's `forward` callback runs one micro-batch on this
// stage and says what to send on and what to backpropagate from.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "parallel/communicator.h"

namespace hydra::parallel {

// What one micro-batch's forward on a stage produced.
struct StageForward {
  at::Tensor output;  // the activation for the next stage (undefined on the last stage)
  at::Tensor loss;    // this stage's share of the step loss, already divided by the number of
                      // micro-batches (a scalar; undefined or without grad: nothing to add)
};

// Runs micro-batch `micro` on this stage. `input`: the previous stage's activation, a leaf
// that requires grad (undefined on the first stage).
using StageForwardFn = std::function<StageForward(int micro, const at::Tensor& input)>;

struct PipelineSpec {
  Communicator* pp = nullptr;               // group rank = stage
  int micro_batches = 1;
  std::vector<int64_t> activation_shape;    // [micro_batch, seq, dim]
  at::TensorOptions activation_options;     // dtype and device of the activations
  // Called just before the backward of the last micro-batch, the one that completes the
  // parameters' gradients (the gradient reduction arms its overlap there, grad_overlap.h).
  std::function<void()> before_last_backward;
};

// Forward and backward of every micro-batch with the 1F1B schedule. Parameter gradients
// accumulate in .grad as in a plain loop over the micro-batches, in the same order (0, 1, ...).
void run_1f1b(const PipelineSpec& spec, const StageForwardFn& forward);

// Forward only (evaluation): each micro-batch passes the stages in order; no gradients.
void run_forward_only(const PipelineSpec& spec, const StageForwardFn& forward);

}  // namespace hydra::parallel
