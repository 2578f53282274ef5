// Everything a rank knows about the parallel run: its place in the grid and one
// communicator per group. Built once by main(), owned there, and handed to components (or
// just the one communicator a component needs). There is no global copy (STYLE.md rule 1).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace hydra::parallel {

struct ParallelContext {
  ProcessGrid grid;                     // shape, this rank's coordinates, group rank lists
  std::string backend;                  // "mpi" (CPU tensors) or "nccl" (CUDA tensors)
  std::unique_ptr<Communicator> world;  // all ranks, in world-rank order
  std::unique_ptr<Communicator> tp;     // grid.tp_ranks: tensor-parallel peers
  std::unique_ptr<Communicator> dp;     // grid.dp_ranks: data-parallel replicas (gradients)
  std::unique_ptr<Communicator> pp;     // grid.pp_ranks, in stage order (activations)
  // Members are destroyed in reverse order: the groups go before the world communicator
  // (NCCL groups were split from it).
};

// Builds the communicators of `grid` for this rank. Collective over MPI_COMM_WORLD: every
// rank calls it once, with the same shape, backend and timeout, after MpiSession started MPI.
// `grid.rank` must be this process's world rank. backend: "mpi" or "nccl" ("nccl" only in the
// CUDA build; it selects the GPU local_rank on the node and needs one GPU per local rank).
// timeout_s: for every later call on these communicators (exit 4 on expiry).
// Throws ConfigError for an unknown or unavailable backend, RuntimeFailure for a grid that
// does not match the MPI world.
std::unique_ptr<ParallelContext> make_parallel_context(const ProcessGrid& grid,
                                                       const std::string& backend,
                                                       double timeout_s);

// This rank's host waits summed over its four communicators; nullopt when any of them does
// not measure them (NCCL).
std::optional<HostWait> host_wait(const ParallelContext& ctx);

// Each communicator's call totals so far, by group name ("world", "tp", "dp", "pp"), for the
// groups of more than one rank.
std::map<std::string, CallTotals> call_totals(const ParallelContext& ctx);

}  // namespace hydra::parallel
