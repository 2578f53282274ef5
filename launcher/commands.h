// The subcommands. Each receives the resolved config and what the launcher knows about the
// process (rank, world); each returns the process exit code.
#pragma once

#include <memory>

#include "launcher/cli.h"
#include "launcher/config.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"

namespace hydra::launcher {

// The process grid of parallel.* over the launched ranks, and its communicators.
std::unique_ptr<parallel::ParallelContext> build_context(const Config& config, const parallel::LaunchInfo& launch);
// One process standing for rank 0 of tensor parallelism `tp` with its collectives left out
// (parallel/tp_slice.h): `hydra bench step --tp-slice N`.
std::unique_ptr<parallel::ParallelContext> build_tp_slice_context(const Config& config, int tp);

int run_info(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
int run_train(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
int run_data_prepare(const CliArgs& args, const parallel::LaunchInfo& launch);
int run_ckpt_inspect(const CliArgs& args, const parallel::LaunchInfo& launch);
int run_ckpt_consolidate(const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra bench attention`: the CUDA build runs bench/; the CPU build exits 2.
int run_bench(const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra bench step`: both builds.
int run_bench_step(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra bench comm`: both builds, every rank.
int run_bench_comm(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
int run_eval(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra generate`: one process, or tensor-parallel ranks under mpirun; both builds.
int run_generate(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra diagnose`: one process, both builds.
int run_diagnose(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch);
// `hydra sweep`: one process without MPI (main() calls it before MPI starts); it launches
// mpirun for each point itself.
int run_sweep(const CliArgs& args);
// `hydra plan`: one process, no MPI (main() calls it before MPI starts), no device.
int run_plan(const CliArgs& args);

}  // namespace hydra::launcher
