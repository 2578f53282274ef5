// A deliberately broken program: the run must stop with the right exit code and a report
// naming what went wrong, well before any test timeout.
//
//   mpirun -np 2 timeout_probe [--backend mpi|nccl] [--timeout S]
//       rank 1 skips the third call (all_reduce #2 on 'world') and idles; rank 0 times out:
//       exit 4 with the timeout report.
//   timeout_probe --self-recv [--timeout S]
//       one process: recv #2 from itself on 'world', which no send ever matches: exit 4.
//   mpirun -np 2 timeout_probe --fail-rank1 --timeout 60
//       rank 1 throws a RuntimeFailure while rank 0 waits in all_reduce #2: the job must end
//       with exit 4 at once, not after rank 0's timeout (MpiSession skips MPI_Finalize while
//       an exception propagates, as in the launcher's main()).
// Exits 1 if nothing failed (the test then fails on the exit code).
#include <ATen/ops/ones.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/errors.h"
#include "common/logging.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"

namespace {

using namespace hydra;

struct ProbeOptions {
  std::string backend = "mpi";
  double timeout_s = 2.0;
  bool self_recv = false;
  bool fail_rank1 = false;
};

ProbeOptions parse(int argc, char** argv) {
  ProbeOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--backend" && i + 1 < argc) {
      o.backend = argv[++i];
    } else if (arg == "--timeout" && i + 1 < argc) {
      o.timeout_s = std::atof(argv[++i]);
    } else if (arg == "--self-recv") {
      o.self_recv = true;
    } else if (arg == "--fail-rank1") {
      o.fail_rank1 = true;
    } else {
      HYDRA_FAIL(common::ConfigError, "timeout_probe: unknown argument '" << arg << "'");
    }
  }
  return o;
}

int run(int argc, char** argv) {
  parallel::MpiSession session(&argc, &argv);  // inside main's try, as in the launcher
  const parallel::LaunchInfo& launch = session.launch();
  common::setup_logging({launch.rank, launch.world, "info", /*all_ranks=*/true});
  const ProbeOptions opt = parse(argc, argv);
  const parallel::GridShape shape = parallel::resolve_grid_shape(launch.world, 0, 1, 1);
  auto ctx = parallel::make_parallel_context(parallel::make_process_grid(shape, launch.rank),
                                             opt.backend, opt.timeout_s);
  parallel::Communicator& world = *ctx->world;
  const at::Device device =
      opt.backend == "nccl"
          ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank))
          : at::Device(at::kCPU);
  at::Tensor t = at::ones({16}, at::TensorOptions().device(device));
  world.barrier();                                // #0: everyone
  world.all_reduce(t, parallel::ReduceOp::kSum);  // #1: everyone
  if (opt.self_recv) {
    world.recv(t, world.rank());  // #2: no matching send
  } else if (launch.rank != 1) {
    world.all_reduce(t, parallel::ReduceOp::kSum);  // #2: rank 1 does not join
    t = t.to(at::kCPU);                             // NCCL: wait for it on the host
  } else if (opt.fail_rank1) {
    HYDRA_FAIL(common::RuntimeFailure, "timeout_probe: rank 1 fails on purpose");
  } else {
    std::fprintf(stderr, "timeout_probe: rank 1 skips all_reduce #2 and idles\n");
    std::this_thread::sleep_for(std::chrono::seconds(25));
  }
  std::fprintf(stderr, "timeout_probe: rank %d finished without a failure\n", launch.rank);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const hydra::common::HydraError& e) {
    std::fprintf(stderr, "timeout_probe: error: %s\n", e.what());
    return static_cast<int>(e.code());
  }
}
