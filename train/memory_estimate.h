// The peak device memory of one training rank, predicted from the config alone (`hydra info`,
// `hydra bench step` beside the measured peak): the persistent state of the ZeRO formula
// (parallel/zero_optimizer.h) plus what the forward keeps for the backward
// (model/activation_memory.h) at the moment the most of it is alive, plus the LM head's
// buffers. docs/MODEL.md ("Memory") gives the inventory and docs/PERF.md how close it comes.
//
// The peak is the larger of two moments: the end of the forward (every activation, the LM
// head's float32 weight-gradient accumulator and its chunk of logits) and the start of the
// backward (every activation, the head's saved gradients, the widest layer backward). The
// parameters' gradients in the compute dtype do not exist yet at either (they are dropped
// before each step); the float32 gradient buffers, master weights and moments always do.
// Modelled for train.device cuda (the fused path); allocator rounding and library workspaces
// (cuBLAS, FlashAttention) are not counted.
#pragma once

#include <cstdint>
#include <vector>

#include "common/json.h"
#include "parallel/process_grid.h"
#include "train/run_config.h"

namespace hydra::train {

struct StageMemory {
  int stage = 0;
  int64_t weights = 0;      // the parameters in the compute dtype
  int64_t gradients = 0;    // the float32 gradient buffers (the compute-dtype ones: not at the peak)
  int64_t optimizer = 0;    // master weights, moments, decay mask (sharded by ZeRO 1/2)
  int64_t activations = 0;  // kept for the backward: every micro-batch in flight on this stage
  int64_t buffers = 0;      // the widest moment's extra: the LM head's, or one layer's backward
  int micro_batches_in_flight = 1;  // 1F1B: pp - stage, at most the micro-batches per step
  int64_t peak() const { return weights + gradients + optimizer + activations + buffers; }
};

struct MemoryEstimate {
  int64_t micro_batch = 0;          // sequences per forward on a rank
  std::vector<StageMemory> stages;  // one per pipeline stage (a rank of that stage)
  const StageMemory& worst() const;  // the stage with the largest peak
};

MemoryEstimate estimate_memory(const RunConfig& config, const parallel::GridShape& shape);

// The estimate as `hydra info --json` and `hydra diagnose` print it (bytes): micro_batch,
// peak_bytes (the worst stage's) and, per stage, stage, weights, gradients, optimizer,
// activations, buffers, micro_batches_in_flight and peak.
common::Json memory_estimate_json(const MemoryEstimate& estimate);
// One stage's figures in bytes (stage, weights, gradients, optimizer, activations, buffers,
// micro_batches_in_flight, peak): hydra info's rows and hydra plan's memory_bytes.
common::Json stage_memory_json(const StageMemory& stage);

}  // namespace hydra::train
