// The training loop: micro-batches with gradient accumulation, the data-parallel gradient
// average, global-norm clipping, AdamW on fp32 master weights, the schedule, metrics,
// evaluation and checkpoints. One function a run; the launcher builds what it needs.
//
// A step, on every rank (docs/ARCHITECTURE.md, "One step"):
//   1. for each micro-batch: forward (training routing), (lm_loss + aux) / accumulation,
//      backward — gradients accumulate in the parameters' .grad
//   2. the data-parallel optimizer (parallel/data_parallel_optimizer.h) averages the
//      gradients over the data-parallel group bucket by bucket: all-reduce (ZeRO 0) or
//      reduce-scatter to the rank that owns each part (ZeRO 1, 2)
//   3. global gradient norm (parallel/grad_norm.h), one collective over the shards, and the
//      step's gate (parallel/step_gate.h), both on the device: a non-finite loss or norm
//      skips the update on every rank (they all hold the same reduced values), the clip
//      factor scales the gradient to train.clip (train/step_update.h)
//   4. AdamW on the fp32 master weights this rank owns, as the gate says, all-gather the
//      updated weights (ZeRO 1, 2) and copy them into the parameters
//   5. consumed samples += global batch; the step's numbers are read late (one step later,
//      or at once for a row, an evaluation, a save): a skipped step is counted and warned
//      about, or the run halts with exit 4, as train.on_nonfinite says; log, evaluate and
//      save (train/run_checkpoints.h) on their schedules
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "parallel/parallel_context.h"
#include "train/run_config.h"

namespace hydra::train {

struct RunRequest {
  std::optional<std::string> resume;     // "latest" or a checkpoint directory
  std::optional<std::string> init_from;  // weights only, fresh optimizer and data position
  std::string config_json;               // the resolved config as JSON, stored in checkpoints
  bool overwrite = false;                // --overwrite: set an earlier run's outputs aside
};

struct RunResult {
  int steps_done = 0;
  double last_loss = 0;
  std::optional<double> last_val_loss;
  std::string last_checkpoint;
};

RunResult run_training(const RunConfig& config, parallel::ParallelContext& ctx, const RunRequest& request);

struct EvalResult {
  double val_loss = 0;
  int64_t step = 0;    // of the evaluated weights' run (checkpoint index or consolidated file)
  int64_t tokens = 0;
};

// Evaluates the weights of a checkpoint directory or a consolidated file: validation loss (and
// so perplexity) in causal routing mode.
// `config_json`: the resolved config, named against the checkpoint's when the weights do not load.
EvalResult run_evaluation(const RunConfig& config, parallel::ParallelContext& ctx, const std::string& checkpoint,
                          const std::string& config_json);

}  // namespace hydra::train
