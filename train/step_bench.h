// `hydra bench step`: the training step of a config timed on its own: no data-order
// bookkeeping beyond the step, no evaluation, no checkpoints, no metrics file.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "parallel/parallel_context.h"
#include "train/run_config.h"
#include "train/step_timer.h"

namespace hydra::train {

struct StepBenchPlan {
  int warmup = 3;  // untimed steps first: allocator growth, cuBLAS heuristics, autotuning
  int steps = 10;  // timed steps
  int traced = 0;  // then this many steps between start_trace() and stop_trace() (a profiler)
  std::function<void()> start_trace;
  std::function<void()> stop_trace;
};

// One rank's own figures over the timed steps. The waits are host time blocked in the
// communicators (parallel::HostWait) per step; none where the backend does not measure them.
struct RankStepFigures {
  double step_ms = 0;                       // this rank's host clock per step
  std::optional<double> collective_wait_ms;  // all-reduce, reduce-scatter, all-gather, broadcast, barrier
  std::optional<double> recv_wait_ms;        // point-to-point receives (pipeline activations and gradients)
  std::optional<double> send_wait_ms;        // point-to-point sends
  double peak_allocated_gb = 0;
  double peak_reserved_gb = 0;
  double device_used_gb = 0;
  double predicted_peak_gb = 0;
};

// A group's calls in one timed step, on this rank: how many and their payload bytes.
struct CallsPerStep {
  double calls = 0;
  double bytes = 0;
};

struct StepBenchResult {
  StepPhases phases;                // per timed step
  int warmup_steps = 0;             // run before timing (more than asked where a CUDA graph must be captured first)
  bool cuda_graphs = false;         // the timed steps replayed a captured step (train.cuda_graphs)
  double wall_step_ms = 0;          // host clock over the timed steps, synchronised at both ends
  int micro_batch = 0;              // sequences per forward on this rank
  int accumulation = 0;             // micro-batches per step
  int64_t tokens_per_step = 0;      // global batch x seq_len
  double flops_per_token = 0;       // model::compute_model_stats (docs/MODEL.md, MFU)
  std::optional<double> peak_flops; // of one device (train/device_peak.h); none: no MFU
  double peak_allocated_gb = 0;     // the caching allocator's peaks over every step (CUDA)
  double peak_reserved_gb = 0;
  double predicted_peak_gb = 0;     // train/memory_estimate.h for this rank's stage, to compare
  double device_used_gb = 0;        // the device's used memory at the end (what mem_gb of a run shows)
  double last_loss = 0;
  std::vector<RankStepFigures> ranks;  // every rank's, in world-rank order (the same on every rank)
  // This rank's communicator calls per timed step, by group (parallel::call_totals: groups of
  // more than one rank); the ranks of a tp or dp group make the same calls.
  std::map<std::string, CallsPerStep> calls_per_step;
};

StepBenchResult run_step_bench(const RunConfig& config, parallel::ParallelContext& ctx, const StepBenchPlan& plan);

// Every rank's `mine`, in world-rank order, on every rank (collective over ctx.world; tensors
// on `device`, where its backend takes them). step_bench_ranks.cpp.
std::vector<RankStepFigures> gather_rank_figures(const RankStepFigures& mine, parallel::ParallelContext& ctx,
                                                 const at::Device& device);

// Per step, in ms, the waits between two readings of parallel::host_wait over `steps` steps;
// all none when either reading is none (NCCL).
void set_wait_figures(RankStepFigures& figures, const std::optional<parallel::HostWait>& before,
                      const std::optional<parallel::HostWait>& after, int steps);

}  // namespace hydra::train
