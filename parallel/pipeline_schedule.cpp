#include "parallel/pipeline_schedule.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <deque>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

// A micro-batch between its forward and its backward on this stage.
struct InFlight {
  at::Tensor input;   // received activation (undefined on the first stage)
  at::Tensor output;  // sent activation (undefined on the last stage)
  at::Tensor loss;
  int micro = 0;
};

// The point-to-point steps of the schedule, named after Megatron's. On the first stage
// nothing comes in from before; on the last nothing goes on.
struct StageLinks {
  const PipelineSpec& spec;
  int stage;
  bool first, last;

  at::Tensor buffer() const { return at::empty(spec.activation_shape, spec.activation_options); }

  at::Tensor recv_forward() const {
    if (first) return {};
    at::Tensor x = buffer();
    spec.pp->recv(x, stage - 1);
    return x;
  }
  void send_forward(const at::Tensor& y) const {
    if (!last) spec.pp->send(y.detach().contiguous(), stage + 1);
  }
  at::Tensor recv_backward() const {
    if (last) return {};
    at::Tensor g = buffer();
    spec.pp->recv(g, stage + 1);
    return g;
  }
  void send_backward(const at::Tensor& g) const {
    if (!first) spec.pp->send(g.contiguous(), stage - 1);
  }
  at::Tensor send_forward_recv_backward(const at::Tensor& y) const {
    if (last) return {};
    at::Tensor g = buffer();
    spec.pp->exchange(y.detach().contiguous(), stage + 1, g, stage + 1);
    return g;
  }
  at::Tensor send_backward_recv_forward(const at::Tensor& g) const {
    if (first) return {};
    at::Tensor x = buffer();
    spec.pp->exchange(g.contiguous(), stage - 1, x, stage - 1);
    return x;
  }
};

InFlight forward_one(const StageForwardFn& forward, int micro, const at::Tensor& received, const StageLinks& links) {
  InFlight f;
  f.micro = micro;
  if (received.defined()) f.input = received.requires_grad_(true);
  const StageForward out = forward(micro, f.input);
  HYDRA_CHECK(links.last || out.output.defined(), "pipeline stage " << links.stage << " produced no activation");
  f.output = out.output;
  f.loss = out.loss;
  return f;
}

// Backward of the oldest micro-batch in flight; returns the gradient of its input.
at::Tensor backward_one(std::deque<InFlight>& in_flight, const at::Tensor& grad_output, const StageLinks& links) {
  InFlight f = std::move(in_flight.front());
  in_flight.pop_front();
  if (f.micro == links.spec.micro_batches - 1 && links.spec.before_last_backward) links.spec.before_last_backward();
  std::vector<at::Tensor> roots, grads;
  // An output that needs no gradient (train.freeze froze everything before it on this stage)
  // has nothing to back-propagate.
  if (!links.last && f.output.requires_grad()) {
    roots.push_back(f.output);
    grads.push_back(grad_output);
  }
  if (f.loss.defined() && f.loss.requires_grad()) {
    roots.push_back(f.loss);
    grads.push_back(at::ones_like(f.loss));
  }
  if (!roots.empty()) torch::autograd::backward(roots, grads);
  if (links.first) return {};
  // An input no path used (cannot happen in HYDRA, but a zero is the right gradient then).
  return f.input.grad().defined() ? f.input.grad() : at::zeros(f.input.sizes(), f.input.options());
}

StageLinks links_of(const PipelineSpec& spec) {
  HYDRA_CHECK(spec.pp != nullptr, "pipeline schedule without a pipeline communicator");
  HYDRA_CHECK(spec.micro_batches >= 1, "pipeline schedule: " << spec.micro_batches << " micro-batches");
  const int stage = spec.pp->rank();
  return {spec, stage, stage == 0, stage == spec.pp->size() - 1};
}

}  // namespace

void run_1f1b(const PipelineSpec& spec, const StageForwardFn& forward) {
  const StageLinks links = links_of(spec);
  const int m = spec.micro_batches;
  const int warmup = std::min(spec.pp->size() - links.stage - 1, m);
  const int steady = m - warmup;
  std::deque<InFlight> in_flight;
  int next_forward = 0;
  for (int i = 0; i < warmup; ++i) {
    in_flight.push_back(forward_one(forward, next_forward++, links.recv_forward(), links));
    links.send_forward(in_flight.back().output);
  }
  at::Tensor received = steady > 0 ? links.recv_forward() : at::Tensor();
  for (int i = 0; i < steady; ++i) {
    in_flight.push_back(forward_one(forward, next_forward++, received, links));
    const at::Tensor grad_output = links.send_forward_recv_backward(in_flight.back().output);
    const at::Tensor grad_input = backward_one(in_flight, grad_output, links);
    if (i + 1 == steady) {
      links.send_backward(grad_input);
    } else {
      received = links.send_backward_recv_forward(grad_input);
    }
  }
  for (int i = 0; i < warmup; ++i) {
    const at::Tensor grad_output = links.recv_backward();
    links.send_backward(backward_one(in_flight, grad_output, links));
  }
  HYDRA_CHECK(in_flight.empty(), "pipeline schedule left " << in_flight.size() << " micro-batches without backward");
}

void run_forward_only(const PipelineSpec& spec, const StageForwardFn& forward) {
  const StageLinks links = links_of(spec);
  c10::NoGradGuard no_grad;
  for (int micro = 0; micro < spec.micro_batches; ++micro) {
    const StageForward out = forward(micro, links.recv_forward());
    if (!links.last) links.send_forward(out.output);
  }
}

}  // namespace hydra::parallel
