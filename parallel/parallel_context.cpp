#include "parallel/parallel_context.h"

#include <mpi.h>

#include <numeric>

#include "common/errors.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_session.h"
#ifdef HYDRA_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace hydra::parallel {

std::unique_ptr<ParallelContext> make_parallel_context(const ProcessGrid& grid,
                                                       const std::string& backend,
                                                       double timeout_s) {
  const LaunchInfo launch = query_launch_info(MPI_COMM_WORLD);
  if (grid.shape.world() != launch.world || grid.rank != launch.rank) {
    HYDRA_FAIL(common::RuntimeFailure, "process grid " << grid.shape.dp << "x" << grid.shape.tp
                                                       << "x" << grid.shape.pp << " for rank "
                                                       << grid.rank << " does not match MPI: rank "
                                                       << launch.rank << " of " << launch.world);
  }
  auto ctx = std::make_unique<ParallelContext>();
  ctx->grid = grid;
  ctx->backend = backend;
  std::vector<int> all(static_cast<size_t>(launch.world));
  std::iota(all.begin(), all.end(), 0);

  // Same order on every rank (world, tp, dp, pp): the MPI groups are created by their
  // members only and the NCCL splits by everyone, and both need one order to not deadlock.
  if (backend == "mpi") {
    ctx->world = make_mpi_communicator(MPI_COMM_WORLD, all, "world", timeout_s);
    ctx->tp = make_mpi_communicator(MPI_COMM_WORLD, grid.tp_ranks, "tp", timeout_s);
    ctx->dp = make_mpi_communicator(MPI_COMM_WORLD, grid.dp_ranks, "dp", timeout_s);
    ctx->pp = make_mpi_communicator(MPI_COMM_WORLD, grid.pp_ranks, "pp", timeout_s);
  } else if (backend == "nccl") {
#ifdef HYDRA_CUDA
    ctx->world = make_nccl_world_communicator(MPI_COMM_WORLD, launch.local_rank, timeout_s);
    ctx->tp = split_nccl_communicator(*ctx->world, grid.tp_ranks, "tp", timeout_s);
    ctx->dp = split_nccl_communicator(*ctx->world, grid.dp_ranks, "dp", timeout_s);
    ctx->pp = split_nccl_communicator(*ctx->world, grid.pp_ranks, "pp", timeout_s);
#else
    HYDRA_FAIL(common::ConfigError,
               "parallel.backend: 'nccl' needs the CUDA build (-DHYDRA_CUDA=ON); use 'mpi' here");
#endif
  } else {
    HYDRA_FAIL(common::ConfigError,
               "parallel.backend: expected 'mpi' or 'nccl', got '" << backend << "'");
  }
  return ctx;
}

std::optional<HostWait> host_wait(const ParallelContext& ctx) {
  HostWait sum;
  for (const Communicator* comm : {ctx.world.get(), ctx.tp.get(), ctx.dp.get(), ctx.pp.get()}) {
    if (comm == nullptr) continue;
    const std::optional<HostWait> waited = comm->host_wait();
    if (!waited) return std::nullopt;
    sum += *waited;
  }
  return sum;
}

std::map<std::string, CallTotals> call_totals(const ParallelContext& ctx) {
  // Groups of one rank communicate nothing (their calls return at once): left out.
  std::map<std::string, CallTotals> out;
  for (const Communicator* comm : {ctx.world.get(), ctx.tp.get(), ctx.dp.get(), ctx.pp.get()}) {
    if (comm != nullptr && comm->size() > 1) out[comm->name()] = comm->call_totals();
  }
  return out;
}

}  // namespace hydra::parallel
