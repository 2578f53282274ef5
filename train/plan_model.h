// `hydra plan`'s model of one training layout (docs/SCALING.md): the memory per GPU from the
// same estimate `hydra info` prints (train/memory_estimate.h) and the step time from FLOPs at
// an achieved rate plus the exposed collectives (train/plan_comm.h) and the 1F1B bubble.
// No MPI: the cluster and the calibration are plain numbers the launcher reads from files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/memory_estimate.h"
#include "train/plan_comm.h"
#include "train/run_config.h"

namespace hydra::train {

struct Cluster {
  std::string name;
  int gpus_per_node = 0;
  double peak_flops = 0;  // bf16 dense FLOP/s per GPU
  double hbm_bytes = 0;
  Link intra;             // within a node, per GPU
  Link inter;             // between nodes, per GPU
};

// What one GPU achieves, from calibration runs (fit_rates) or the cluster's peak. A micro-batch's
// forward+backward costs micro_batch_overhead (launches, per-operation costs: what a small
// micro-batch cannot amortise), plus its FLOPs at achieved_flops (the work tensor parallelism
// divides among its ranks), plus replicated_per_token for each of its tokens (the full-width
// work every tp rank repeats: norms, residual adds, routers, the embedding); the optimizer step
// costs optimizer_per_param for each parameter the GPU updates.
struct PlanRates {
  double achieved_flops = 0;        // FLOP/s of the forward+backward's arithmetic that tp divides
  double micro_batch_overhead = 0;  // seconds per micro-batch, the whole model on one GPU
  double replicated_per_token = 0;  // seconds per token of the work tp does not divide (0 unless a --tp-slice run measured it)
  double optimizer_per_param = 0;   // seconds per parameter updated
  std::string achieved_source;      // where the figures came from, printed with the plan
  double overlap_fraction = 1.0;    // of the last micro-batch's backward that hides dp reduction
};

// One calibration run (`hydra bench step --json` on one GPU, no accumulation).
struct CalibrationPoint {
  double tokens = 0;              // global_batch x seq_len
  double forward_backward_s = 0;  // the step without its optimizer phase
  double optimizer_s = 0;         // the gradient reduction and optimizer phase (0 when not split out)
  int tp_slice = 1;               // > 1: one rank of that tensor parallelism, collectives left out (--tp-slice)
};

// The rates of a model with `flops_per_token` and `params` parameters from its runs. The whole-
// model runs (tp_slice 1; at least one): one gives achieved_flops alone (no overhead); two or more
// micro-batch sizes fit forward_backward_s = overhead + flops / rate by least squares (a fit with
// a negative overhead or rate falls back to the largest run alone). A slice run of tp k then
// splits the per-token cost c (= flops_per_token / rate) into what tp divides and what it does
// not: its per-token time c_k = (forward_backward_s - overhead) / tokens = (c - r) / k + r gives
// r = (k c_k - c) / (k - 1), clamped to [0, c), the mean over slice runs; achieved_flops becomes
// flops_per_token / (c - r). optimizer_per_param: the whole-model runs' mean.
PlanRates fit_rates(const std::vector<CalibrationPoint>& runs, double flops_per_token, double params);

struct Layout {
  int dp = 1, tp = 1, pp = 1, zero = 0;
  int micro_batch = 1;     // sequences per forward
  int micro_batches = 1;   // per step per dp rank
  std::string recompute = "none";
  std::string name() const;
};

struct Prediction {
  Layout layout;
  bool feasible = true;
  std::string reason;      // why not, when infeasible
  StageMemory memory;      // the worst stage (hydra info's estimate)
  double compute_ms = 0, optimizer_ms = 0, tp_comm_ms = 0, pp_comm_ms = 0, dp_exposed_ms = 0, bubble_ms = 0;
  double step_ms = 0, tok_s = 0, mfu = 0;
  double exposed_comm_ms() const { return tp_comm_ms + pp_comm_ms + dp_exposed_ms; }
};

// The config with the layout's keys set (parallel.*, train.micro_batch, activation_checkpointing).
RunConfig with_layout(const RunConfig& base, const Layout& layout);

// Predicts one layout; infeasible (with the reason) when the grid, the pipeline split, the
// heads' split or the HBM refuse it.
Prediction predict_layout(const RunConfig& base, const Layout& layout, const Cluster& cluster, const PlanRates& rates);

// Every layout of `gpus` GPUs: dp x tp x pp = gpus, ZeRO 0-2, micro-batch counts that divide
// the batch, each recompute mode. Feasible ones sorted by tok/s (best first), then the rest.
std::vector<Prediction> plan_layouts(const RunConfig& base, int gpus, const Cluster& cluster, const PlanRates& rates);

// The FLOP multiplier of a recompute mode: the recomputed forward on top of fwd + bwd (3x fwd).
double recompute_flops_factor(const RunConfig& config, const std::string& mode);

}  // namespace hydra::train
