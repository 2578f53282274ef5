// The metrics file (docs/INTERFACE.md): JSON Lines written by rank 0, one object per logged
// step — step, loss, lr, grad_norm, tokens, tok_s, mfu (null on CPU), skipped, mem_gb — and
// evaluation rows with val_loss; ckpt_stall_ms, ckpt_write_ms, ckpt_load_ms after
// checkpoints; params_trainable and params_frozen in a process's first row. Floats
// round-trip, so two runs compare bit for bit.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace hydra::train {

// Checkpoint timings since the previous row; absent when nothing happened (docs/CHECKPOINT.md).
struct CheckpointTimes {
  std::optional<double> stall_ms;  // the loop stood still for saves: a sync save whole; for
                                   // checkpoint.async the host copy, waits and commits
  std::optional<double> copy_ms;   // checkpoint.async: the host copy alone (part of stall_ms)
  std::optional<double> write_ms;  // writing the last completed save (in the background for async)
  std::optional<double> load_ms;   // loading the checkpoint the run resumed from
};

// The model's parameters (elements) that train and that train.freeze froze.
struct ParamSplit {
  int64_t trainable = 0;
  int64_t frozen = 0;
};

struct StepMetrics {
  int step = 0;                  // optimizer steps completed
  double loss = 0;               // LM loss (mean over the global batch)
  double aux_loss = 0;           // MoD/MoR router losses, reported separately
  double lr = 0;
  double grad_norm = 0;          // before clipping
  long long tokens = 0;          // consumed so far
  double tok_s = 0;
  std::optional<double> mfu;     // CUDA only
  int skipped = 0;               // non-finite steps skipped so far
  std::optional<double> mem_gb;  // memory in use on rank 0: its GPU (cudaMemGetInfo), else its RSS
  std::optional<double> val_loss;
  CheckpointTimes checkpoint;
  std::optional<ParamSplit> params;  // in the first row a process writes
};

class MetricsFile {
 public:
  // Opens `path` for appending (empty path: writes nothing). Rows of steps after
  // `resume_step` (written by the resumed run after its checkpoint) move to
  // <path>.superseded first, so the file reads as one uninterrupted run and nothing is lost.
  MetricsFile(const std::string& path, int resume_step);
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  // Writes and flushes one row; a failed write (a full disk) throws RuntimeFailure (exit 4)
  // naming the file: metrics are never lost silently.
  void write(const StepMetrics& row);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

std::string metrics_row(const StepMetrics& row);

}  // namespace hydra::train
