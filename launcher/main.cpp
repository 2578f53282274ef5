// The `hydra` executable: parse the command line, start MPI, load and validate the config,
// run the subcommand, tear down. Errors become exit codes here and nowhere else.

#include <cstdio>
#include <exception>

#include "common/crash_report.h"
#include "common/errors.h"
#include "common/heap_reuse.h"
#include "common/logging.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "launcher/version.h"
#include "parallel/mpi_session.h"

namespace {

int run(int argc, char** argv, int& rank) {
  using namespace hydra;
  const launcher::CliArgs args = launcher::parse_cli(argc, argv);
  if (args.version) {
    std::printf("%s\n", launcher::version_text().c_str());
    return 0;
  }
  if (args.help) {
    std::printf("%s", launcher::help_text(args.command).c_str());
    return 0;
  }
  // Before MPI: the sweep starts mpirun itself, and an MPI-initialised parent would hand its
  // Open MPI environment to those children.
  if (args.command == "sweep") return launcher::run_sweep(args);
  if (args.command == "plan") return launcher::run_plan(args);  // arithmetic only: no MPI
  parallel::MpiSession mpi(&argc, &argv);
  const parallel::LaunchInfo launch = mpi.launch();
  rank = launch.rank;
  common::install_crash_report(launch.rank);
  common::setup_logging({launch.rank, launch.world, "info", false});
  if (args.command == "data prepare") return launcher::run_data_prepare(args, launch);
  if (args.command == "ckpt inspect") return launcher::run_ckpt_inspect(args, launch);
  if (args.command == "ckpt consolidate") return launcher::run_ckpt_consolidate(args, launch);
  if (args.command == "bench attention") return launcher::run_bench(args, launch);
  const launcher::Config config = launcher::load_config(args.config, args.sets);
  common::setup_logging({launch.rank, launch.world, config.log.level, config.log.all_ranks});
  if (args.command == "info") return launcher::run_info(config, args, launch);
  if (args.command == "train") return launcher::run_train(config, args, launch);
  if (args.command == "eval") return launcher::run_eval(config, args, launch);
  if (args.command == "generate") return launcher::run_generate(config, args, launch);
  if (args.command == "bench step") return launcher::run_bench_step(config, args, launch);
  if (args.command == "bench comm") return launcher::run_bench_comm(config, args, launch);
  if (args.command == "diagnose") return launcher::run_diagnose(config, args, launch);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  hydra::common::keep_freed_heap_for_reuse();  // before the first tensor (common/heap_reuse.h)
  int rank = 0;
  try {
    return run(argc, argv, rank);
  } catch (const hydra::common::ConfigError& e) {
    // Every rank sees the same config error; one message is enough.
    if (rank == 0) std::fprintf(stderr, "hydra: error: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const hydra::common::Preempted& e) {
    // Every rank agreed and saved; one line is enough.
    if (rank == 0) std::fprintf(stderr, "hydra: %s (exit 75)\n", e.what());
    return static_cast<int>(e.code());
  } catch (const hydra::common::HydraError& e) {
    std::fprintf(stderr, "hydra: error (rank %d): %s\n", rank, e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hydra: internal error (rank %d): %s\n", rank, e.what());
    return static_cast<int>(hydra::common::ExitCode::kRuntime);
  }
}
