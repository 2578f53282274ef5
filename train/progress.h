// The progress line rank 0 prints at the first step of the process and every log.every steps:
//   step 120/1000 | loss 4.8123 | lr 2.9e-04 | gnorm 0.91 | 5,310 tok/s | mfu 41.2% | mem 2.1 GB | ETA 12m03s
// The first one adds how long that step took (`| first step 41.3 s (includes warm-up)`); the ETA
// comes from the rate of the steps after it.
#pragma once

#include <chrono>
#include <optional>

#include "train/metrics.h"

namespace hydra::train {

class ProgressLine {
 public:
  ProgressLine(int total_steps, int start_step, bool cuda);
  void print(const StepMetrics& row);

 private:
  int total_steps_;
  int start_step_;
  bool cuda_;
  std::chrono::steady_clock::time_point start_;
  std::optional<double> first_step_s_;  // seconds the process's first step took (warm-up included)
};

// Resident memory of this process (CPU) or memory in use on the current GPU, in bytes.
double memory_in_use_bytes(bool cuda);

}  // namespace hydra::train
