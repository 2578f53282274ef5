// `hydra bench comm`: the bandwidth and latency of the collectives the training step uses,
// through the project's own communicators (MPI on CPU tensors, NCCL on CUDA tensors), on each
// process group of a layout. Figures follow nccl-tests' definitions, so that they compare with
// NCCL's own numbers:
//   algorithm bandwidth  algbw = bytes / time, bytes the whole buffer (for reduce-scatter and
//                        all-gather the full, unsharded buffer);
//   bus bandwidth        busbw = algbw x the share of the buffer every link must carry:
//                        all-reduce 2 (n-1)/n, reduce-scatter and all-gather (n-1)/n,
//                        point-to-point 1 (each rank sends the buffer to the next, ring-wise).
// time is the slowest rank's mean over the timed calls, the calls back to back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/parallel_context.h"

namespace hydra::parallel {

struct CommBenchPlan {
  std::vector<int64_t> sizes;  // bytes of float32 buffers, each a multiple of 4
  int repeats = 10;            // timed calls of each collective at each size, after one checked call
  at::Device device = at::kCPU;
  std::function<void(const std::string&)> progress;  // a line per measured point (rank 0)
};

struct CommBenchRow {
  std::string group;  // "world", "tp", "dp", "pp"
  int ranks = 0;      // in the group
  std::string op;     // "all_reduce", "reduce_scatter", "all_gather", "p2p"
  int64_t bytes = 0;
  double ms = 0;      // the slowest rank's mean time of one call
  double algbw_gbs = 0, busbw_gbs = 0;  // GB/s (1e9 bytes)
};

// The bus bandwidth factor of `op` on `ranks` ranks (the list above).
double bus_factor(const std::string& op, int ranks);

// Every collective at every size on each group of `ctx` with more than one rank (tp, dp and pp
// only where they differ from the world). Each (group, op, size) is first called once and its
// result checked against the values every rank put in (a wrong sum or a misplaced shard is a
// RuntimeFailure naming the group, op and size), then timed. Collective over the world: every
// rank calls it with the same plan; every rank gets the same rows.
std::vector<CommBenchRow> run_comm_bench(ParallelContext& ctx, const CommBenchPlan& plan);

}  // namespace hydra::parallel
