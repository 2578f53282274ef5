#include "train/step_numbers.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <chrono>
#include <thread>
#include <utility>

namespace hydra::train {

at::Tensor pack_step_numbers(const at::Tensor& loss_sum, const at::Tensor& grad_norm, const at::Tensor& applied) {
  c10::NoGradGuard no_grad;
  return at::cat({loss_sum.detach().to(at::kDouble).reshape({2}), grad_norm.to(at::kDouble).reshape({1}),
                  applied.to(at::kDouble).reshape({1})});
}

LateStepNumbers::LateStepNumbers(const at::Tensor& packed) {
  if (!packed.is_cuda()) {
    host_ = packed.contiguous();  // read when asked: nothing to wait for
    return;
  }
  host_ = at::empty(packed.sizes(), packed.options().device(at::kCPU).pinned_memory(true));
  host_.copy_(packed, /*non_blocking=*/true);  // queued on the current stream, after the step
  const c10::Device device = packed.device();
  landed_ = std::make_unique<c10::Event>(device.type());
  landed_->record(c10::impl::VirtualGuardImpl(device.type()).getStream(device));
}

StepNumbers LateStepNumbers::read() const {
  // c10::Event has no blocking wait in LibTorch 1.13; a short sleep between queries costs
  // nothing next to a step.
  if (landed_) {
    while (!landed_->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  const double* d = host_.data_ptr<double>();
  return StepNumbers{d[0], d[1], d[2], d[3] > 0.5};
}

void PendingSteps::push(int64_t step, const at::Tensor& packed) { steps_.push_back({step, LateStepNumbers(packed)}); }

void PendingSteps::settle(size_t keep, const std::function<void(int64_t, const StepNumbers&)>& use) {
  while (steps_.size() > keep) {
    const Pending oldest = std::move(steps_.front());
    steps_.pop_front();
    use(oldest.step, oldest.numbers.read());
  }
}

}  // namespace hydra::train
