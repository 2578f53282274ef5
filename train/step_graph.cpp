#include "train/step_graph.h"

#include <chrono>
#include <utility>

#include "common/errors.h"
#include "common/logging.h"

#ifdef HYDRA_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace hydra::train {

std::vector<std::string> cuda_graph_blockers(const RunConfig& config, const parallel::GridShape& shape,
                                             bool tp_capturable) {
  std::vector<std::string> why;
  if (config.train.device != "cuda") why.push_back("train.device is " + config.train.device + ", not cuda");
#ifndef HYDRA_CUDA
  if (config.train.device == "cuda") why.push_back("the CPU build has no CUDA");  // (load_config refuses this first)
#endif
  if (shape.dp > 1) {
    why.push_back("dp " + std::to_string(shape.dp) +
                  ": the gradient reduction (its overlap reads on the host) is not captured yet");
  }
  if (shape.pp > 1) {
    why.push_back("pp " + std::to_string(shape.pp) + ": the pipeline's sends and receives are not captured yet");
  }
  if (shape.tp > 1 && !tp_capturable) {
    why.push_back("tp " + std::to_string(shape.tp) + ": its collectives are not captured yet");
  }
  if (config.train.inject_nonfinite_step > 0) {
    why.push_back("train.inject_nonfinite_step poisons one chosen step, which a replayed graph cannot single out");
  }
  return why;
}

bool use_cuda_graphs(const RunConfig& config, const parallel::ParallelContext& ctx) {
  const std::string& mode = config.train.cuda_graphs;
  if (mode == "off") return false;
  const std::vector<std::string> why = cuda_graph_blockers(config, ctx.grid.shape, ctx.tp && ctx.tp->capturable());
  if (why.empty()) return true;
  std::string blocker;
  for (const auto& reason : why) blocker += (blocker.empty() ? "" : "; ") + reason;
  if (mode == "on") {
    HYDRA_FAIL(common::ConfigError, (config.source.empty() ? std::string("config") : config.source)
                                        << ": train.cuda_graphs: on, but the step cannot be captured: " << blocker
                                        << " (set train.cuda_graphs: auto or off)");
  }
  // A CPU run needs no word about CUDA graphs.
  if (config.train.device == "cuda") common::log_info("cuda graphs: off (%s)", blocker.c_str());
  return false;
}

#ifdef HYDRA_CUDA

struct StepGraph::Captured {
  // Warm-up and capture run on a stream of their own (the capture needs one that is not the
  // default stream, and per-stream lazy set-up, such as cuBLAS workspaces, then happens
  // before the capture); replays run on the caller's stream, in order with the input copies.
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  at::Tensor output;
  bool ready = false;

  // `step` on the side stream, in order with the caller's stream on both sides.
  at::Tensor on_side(const std::function<at::Tensor()>& step) {
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream();
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(caller);
    inputs_ready.block(side);
    at::Tensor out;
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      out = step();
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(caller);
    return out;
  }

  void capture(const std::function<at::Tensor()>& step, const std::string& what) {
    // The eager steps' cached blocks go back to the device: the graph's pool takes their place.
    c10::cuda::device_synchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
    const auto start = std::chrono::steady_clock::now();
    output = on_side([&] {
      graph.capture_begin();
      try {
        at::Tensor out = step();
        graph.capture_end();
        return out;
      } catch (const std::exception& e) {
        // End the capture so that the stream is usable again, then name the way out.
        cudaGraph_t partial = nullptr;
        if (cudaStreamEndCapture(side.stream(), &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
        HYDRA_FAIL(common::RuntimeFailure, "capturing " << what << " in a CUDA graph failed ("
                                               << e.what() << "); set train.cuda_graphs: off to run it eagerly");
      }
    });
    ready = true;
    common::log_info("cuda graphs: %s captured in %.0f ms; every step from here replays it", what.c_str(),
                     std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
};

StepGraph::StepGraph(int eager_steps, std::string what)
    : captured_(std::make_unique<Captured>()), eager_steps_(eager_steps), what_(std::move(what)) {}

at::Tensor StepGraph::run(const std::function<at::Tensor()>& step) {
  Captured& c = *captured_;
  if (calls_++ < eager_steps_) return c.on_side(step);
  if (!c.ready) c.capture(step, what_);  // recorded, not run: the replay below runs it
  c.graph.replay();
  return c.output;
}

bool StepGraph::captured() const { return captured_->ready; }

#else  // the CPU build: use_cuda_graphs() never says yes

struct StepGraph::Captured {};

StepGraph::StepGraph(int eager_steps, std::string what) : eager_steps_(eager_steps), what_(std::move(what)) {}

at::Tensor StepGraph::run(const std::function<at::Tensor()>& step) {
  HYDRA_CHECK(false, "StepGraph needs the CUDA build");
  return step();
}

bool StepGraph::captured() const { return false; }

#endif

StepGraph::~StepGraph() = default;

}  // namespace hydra::train
