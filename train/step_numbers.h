// What the host learns of a training step (its loss, aux loss, gradient norm and whether the
// update applied), computed on the device and read late: the host queues step N + 1 before
// it reads step N, so it never waits for the GPU between steps unless it needs a number now
// (a metrics row, an evaluation, a checkpoint, a preemption, the end of the run).
//
// On CUDA the numbers go to pinned host memory with a non-blocking copy on the current
// stream, and an event marks when they have landed; on the CPU they are simply kept and read
// when asked. Device-generic (c10::Event): no CUDA headers, one code path for both builds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

namespace hydra::train {

struct StepNumbers {
  double loss = 0;        // LM loss averaged over the global batch
  double aux = 0;         // routers' auxiliary loss, likewise
  double grad_norm = 0;   // global gradient norm before clipping
  bool applied = false;   // false: a non-finite loss or norm, the update was skipped
};

// The device form: fp64 [4] = loss, aux, grad norm, applied (1 or 0). `loss_sum` is fp64 [2]
// (loss, aux), `grad_norm` and `applied` 0-dim.
at::Tensor pack_step_numbers(const at::Tensor& loss_sum, const at::Tensor& grad_norm, const at::Tensor& applied);

// One step's numbers on their way to the host: the copy starts on construction.
class LateStepNumbers {
 public:
  explicit LateStepNumbers(const at::Tensor& packed);
  // Waits for the copy if it has not landed yet; never waits for later work on the device.
  StepNumbers read() const;

 private:
  at::Tensor host_;                  // pinned host memory (CUDA) or the CPU tensor itself
  std::unique_ptr<c10::Event> landed_;  // recorded after the copy (CUDA only)
};

// The steps whose numbers the host has not read yet, oldest first.
class PendingSteps {
 public:
  void push(int64_t step, const at::Tensor& packed);
  // Reads every pending step except the newest `keep`, oldest first, handing each to `use`.
  void settle(size_t keep, const std::function<void(int64_t step, const StepNumbers&)>& use);
  size_t size() const { return steps_.size(); }

 private:
  struct Pending {
    int64_t step;
    LateStepNumbers numbers;
  };
  std::deque<Pending> steps_;
};

}  // namespace hydra::train
