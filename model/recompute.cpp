#include "model/recompute.h"

#include <algorithm>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#if HYDRA_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif
#include <torch/autograd.h>

#include "common/errors.h"
#include "common/torch_compat.h"

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The RNG and autocast state a recompute must reproduce. No HYDRA layer draws random numbers
// today (no dropout), but a recompute that silently changed them would be wrong the day one does.
struct RecomputeState : torch::CustomClassHolder {
  RecomputeFn fn;
  at::Tensor cpu_rng;
  at::Tensor cuda_rng;  // only when the input lives on a GPU
  at::Device device = at::kCPU;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

at::Generator rng_for(const at::Device& device) {
  return device.is_cuda() ? at::globalContext().defaultGenerator(device) : at::detail::getDefaultCPUGenerator();
}

at::Tensor get_rng(const at::Device& device) {
  at::Generator gen = rng_for(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng(const at::Device& device, const at::Tensor& state) {
  at::Generator gen = rng_for(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Whether the current CUDA stream is being captured into a CUDA graph (train/step_graph.h):
// then the CUDA generator's state cannot be read (nor would a captured replay see it), and as
// no layer draws random numbers there is nothing to keep.
bool capturing_cuda(const at::Device& device) {
#if HYDRA_CUDA
  return device.is_cuda() && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
#else
  (void)device;
  return false;
#endif
}

void capture(RecomputeState& s) {
  s.cpu_rng = get_rng(at::kCPU);
  if (s.device.is_cuda() && !capturing_cuda(s.device)) s.cuda_rng = get_rng(s.device);
#if HYDRA_AUTOCAST_PER_DEVICE
  s.autocast = at::autocast::is_autocast_enabled(at::kCUDA);
  s.autocast_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
#else
  s.autocast = at::autocast::is_enabled();
  s.autocast_dtype = at::autocast::get_autocast_gpu_dtype();
#endif
}

void restore(const RecomputeState& s) {
  set_rng(at::kCPU, s.cpu_rng);
  if (s.cuda_rng.defined()) set_rng(s.device, s.cuda_rng);
#if HYDRA_AUTOCAST_PER_DEVICE
  at::autocast::set_autocast_enabled(at::kCUDA, s.autocast);
  at::autocast::set_autocast_dtype(at::kCUDA, s.autocast_dtype);
#else
  at::autocast::set_enabled(s.autocast);
  at::autocast::set_autocast_gpu_dtype(s.autocast_dtype);
#endif
}

struct RecomputeFunction : torch::autograd::Function<RecomputeFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<RecomputeState> state) {
    state->device = x.device();
    capture(*state);
    ctx->save_for_backward({x});
    std::vector<at::Tensor> out = state->fn(x, /*first_pass=*/true);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    auto state = c10::static_intrusive_pointer_cast<RecomputeState>(ctx->saved_data["state"].toCapsule());
    const at::Tensor x_in = x.detach().requires_grad_(true);
    std::vector<at::Tensor> out;
    {
      // Fork: run under the first pass's state, then put the caller's state back so that the
      // recompute leaves no trace on the RNG sequence.
      RecomputeState now;
      now.device = state->device;
      capture(now);
      restore(*state);
      c10::AutoGradMode grad_on(true);
      out = state->fn(x_in, /*first_pass=*/false);
      restore(now);
    }
    std::vector<at::Tensor> roots, root_grads;
    for (size_t i = 0; i < out.size() && i < grads.size(); ++i) {
      if (grads[i].defined() && out[i].requires_grad()) {
        roots.push_back(out[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    return {x_in.grad(), at::Tensor()};
  }
};

}  // namespace

Checkpointing parse_checkpointing(const std::string& mode) {
  if (mode == "none") return Checkpointing::kNone;
  if (mode == "mlp") return Checkpointing::kMlp;
  if (mode == "layer") return Checkpointing::kLayer;
  if (mode == "block") return Checkpointing::kBlock;
  HYDRA_FAIL(common::ConfigError,
             "train.activation_checkpointing: '" << mode << "' is not one of none|mlp|layer|block");
}

std::vector<at::Tensor> checkpointed(const at::Tensor& x, RecomputeFn fn, const torch::nn::Module& segment) {
  const auto trains = [&segment] {
    const auto params = segment.parameters();
    return std::any_of(params.begin(), params.end(), [](const at::Tensor& p) { return p.requires_grad(); });
  };
  if (!at::GradMode::is_enabled() || (!x.requires_grad() && !trains())) return fn(x, true);
  const at::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  auto state = c10::make_intrusive<RecomputeState>();
  state->fn = std::move(fn);
  return RecomputeFunction::apply(input, state);
}

}  // namespace hydra::model
