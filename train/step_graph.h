// Whole-step CUDA graphs (train.cuda_graphs): the training step — every micro-batch's forward
// and backward, the gradient norm, the clip and skip gate, AdamW and the new weights — captured
// once into one CUDA graph and replayed every step after, so that the host issues one launch
// where it issued about 1,300 (docs/PERF.md: the eager step is host-bound).
//
// What makes the step capturable: it reads nothing back on the host (train/step_update.h),
// MoD and MoR select a fixed number of tokens in training (static shapes), its inputs live in
// buffers that every step refills (train/step_inputs.h: the micro-batches and the learning
// rate), and the gradients are dropped before the capture, so that the captured backward
// makes them in the graph's own memory pool and every replay writes them afresh.
//
// train.activation_checkpointing is captured too: the recompute (a forward and a backward inside
// the backward, model/recompute.h) does not read the CUDA generator's state while capturing,
// and its replays equal its eager steps to the bit (test CudaGraphTrain.CapturedRecompute*,
// H100 2026-12-07; the "drift" refused on 2026-12-05 was recompute against no recompute on a
// sandbox model whose loss spikes at step 14, which any rounding difference moves).
//
// What is not captured yet falls back to the eager step (auto) or refuses to start (on):
// several processes (the collectives and the gradient overlap, which reads on the host, have
// not been captured and run on several GPUs; `hydra bench step --tp-slice`, one process whose
// tp group has no peers, is captured) and train.inject_nonfinite_step (a testing aid that
// poisons one chosen step). Evaluation, logging, checkpoints and the preemption check run
// eagerly between replays.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/parallel_context.h"
#include "parallel/process_grid.h"
#include "train/run_config.h"

namespace hydra::train {

// Why this run's step cannot be captured, every reason (none: it can). `tp_capturable`: the tp
// group's collectives may be recorded (parallel::Communicator::capturable; the tp-slice
// timing run's group, which has no peers).
std::vector<std::string> cuda_graph_blockers(const RunConfig& config, const parallel::GridShape& shape,
                                             bool tp_capturable = false);

// Whether this run captures its step: train.cuda_graphs off: no; auto: where it can (else an
// info line says why not); on: yes, and a ConfigError naming the key where it cannot.
bool use_cuda_graphs(const RunConfig& config, const parallel::ParallelContext& ctx);

class StepGraph {
 public:
  // The first `eager_steps` steps run eagerly (lazy initialisation, the allocator's growth, the
  // steady state the capture records); the next one is captured and replayed. `what` names the
  // captured work in the log line (a benchmark captures other things than the training step).
  explicit StepGraph(int eager_steps = 2, std::string what = "the training step");
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // One step: `step` itself while eager, then captured (on its first call past the eager
  // steps) and replayed. `step` queues device work only, reading its inputs from buffers that
  // stay put, and returns a device tensor: on a replay that tensor is the captured one, which
  // the next replay overwrites (copy what must outlive it before then).
  at::Tensor run(const std::function<at::Tensor()>& step);

  // Steps before the first replay (a benchmark times replays only).
  int steps_before_replay() const { return eager_steps_ + 1; }
  bool captured() const;

 private:
  struct Captured;  // the CUDA graph (CUDA build only)
  std::unique_ptr<Captured> captured_;
  int eager_steps_ = 0;
  std::string what_;
  int calls_ = 0;
};

}  // namespace hydra::train
