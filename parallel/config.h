// The parallel section of the run config. Plain data: the launcher fills and validates it.
#pragma once

#include <string>
#include <vector>

namespace hydra::parallel {

struct ParallelConfig {
  int dp = 0;                     // 0: world / (tp * pp)
  int tp = 1;
  int pp = 1;
  int zero_stage = 0;
  int micro_batches = 1;          // micro-batches per step per data-parallel rank (pipeline)
  std::vector<int> pp_layers;     // layers of each pipeline stage; empty: balanced by parameters
  bool sequence_parallel = false;
  bool overlap_grad_reduce = true;  // reduce gradient buckets during backward (grad_overlap.h)
  double bucket_mb = 64.0;          // fp32 gradient per bucket (zero_optimizer.h), MiB
  std::string backend = "auto";   // auto|mpi|nccl (auto: nccl on cuda, mpi on cpu)
  double timeout_s = 600.0;       // every collective; on expiry exit 4 naming it
};

}  // namespace hydra::parallel
