// How one layout splits each global batch into its ranks' micro-batches: the one rule the
// trainer uses for training steps and for validation batches alike (docs/DATA.md).
//
// A global batch is B consecutive samples (rows 0 .. B-1). Data-parallel rank r of D runs
// B / (D*M) micro-batches of M rows; its micro-batch m holds rows [(m*D + r)*M, (m*D + r + 1)*M).
// The rows are interleaved over the ranks (micro-batch m of all ranks together is the m-th
// block of D*M rows) — the order the trainer has always read. Every layout covers each row
// of the batch exactly once with micro-batches of equal size, so the mean loss over them, and
// the step's gradient, are those of the whole batch: the layout changes only the split.
// Pipeline stages of one dp rank read the same micro-batches; tp ranks too.
//
// Pure arithmetic: no tensors, no files.
#pragma once

#include <cstdint>

namespace hydra::data {

struct BatchSplit {
  int64_t global_batch = 1;  // B: samples per step (train.global_batch)
  int64_t micro_batch = 1;   // M: rows per forward (train.micro_batch)
  int dp_size = 1;           // D
  int dp_rank = 0;           // r
};

// Checks that D divides B and M divides B / D (ConfigError naming train.global_batch or
// train.micro_batch) and that the rank is one of D.
BatchSplit make_batch_split(int64_t global_batch, int64_t micro_batch, int dp_size, int dp_rank);

// Micro-batches per global batch on each rank: B / (D*M).
int64_t micro_batches(const BatchSplit& split);

// The first sample of micro-batch `micro` of this rank, in the global batch whose row 0 is
// sample `batch_start`: batch_start + (micro*D + r)*M. Its M samples follow consecutively.
int64_t first_sample(const BatchSplit& split, int64_t batch_start, int64_t micro);

}  // namespace hydra::data
