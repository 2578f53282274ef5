// What a training or evaluation run holds, built once by build_run (trainer.cpp) and read by
// the loop, evaluation (trainer.cpp) and checkpoints (run_checkpoints.cpp). Internal to train/.
#pragma once

#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "checkpoint/async_save.h"
#include "checkpoint/checkpoint.h"
#include "data/batch_split.h"
#include "data/loader.h"
#include "model/hydra_model.h"
#include "model/shard_info.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/parallel_context.h"
#include "train/frozen_params.h"
#include "train/metrics.h"
#include "train/oom_message.h"
#include "train/run_config.h"
#include "train/step_graph.h"
#include "train/step_inputs.h"
#include "train/step_timer.h"

namespace hydra::train {

// How this rank reads each global batch (docs/DATA.md).
struct BatchPlan {
  data::BatchSplit split;   // which rows of each global batch this rank's micro-batches take
  int micro_batch = 0;      // sequences per forward on this rank
  int accumulation = 0;     // micro-batches per step on this rank
  int64_t val_batches = 0;  // global batches per evaluation (data::validation_batches)
};

// Checkpoint bookkeeping (run_checkpoints.cpp): every parameter of this rank, frozen ones
// too (the optimizer holds the trainable ones only), and where each sits in the whole model
// (both filled on first use), the background writer of checkpoint.async, and the times to
// report in the next metrics row.
struct RunCheckpoints {
  parallel::NamedParams params;
  std::vector<model::ShardInfo> placements;
  std::unique_ptr<checkpoint::AsyncCheckpointWriter> writer = std::make_unique<checkpoint::AsyncCheckpointWriter>();
  CheckpointTimes times;
};

struct Run {
  const RunConfig& config;
  parallel::ParallelContext& ctx;
  BatchPlan batches;
  data::DataSource data;  // data.path: the training order and the validation windows
  at::TensorOptions device;
  model::HydraModel model;
  parallel::DataParallelOptimizer optim;  // the parameters, their layout, AdamW sharded over ctx.dp
  StepInputs inputs;                      // the step's micro-batches and learning rate, refilled every step
  std::unique_ptr<StepGraph> graph;       // the captured step (train.cuda_graphs); null: eager
  checkpoint::Progress progress;
  RunCheckpoints checkpoints;
  FreezeCounts frozen;  // the whole model's trainable and frozen parameters (train.freeze)
  int steps_run = 0;          // by this process (the second logs how much of the reduction overlapped)
  RunPhase* phase = nullptr;  // where the run is, for an out-of-memory message (null: untracked)
  StepTimer* timer = nullptr;  // hydra bench step: the device time of each phase (null: untimed)
};

inline void enter(Run& run, const char* what) {
  if (run.phase) run.phase->what = what;
  if (run.timer) run.timer->mark(what);
}

}  // namespace hydra::train
