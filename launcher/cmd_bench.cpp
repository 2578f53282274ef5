// `hydra bench attention`: the dev benchmarks of bench/, which exist in the CUDA build only.
#include "common/errors.h"
#include "launcher/commands.h"
#ifdef HYDRA_CUDA
#include "bench/attention_bench.h"
#endif

namespace hydra::launcher {

int run_bench(const CliArgs& args, const parallel::LaunchInfo& launch) {
  HYDRA_CHECK(args.command == "bench attention", "unexpected command " << args.command);
#ifdef HYDRA_CUDA
  if (launch.world > 1) HYDRA_FAIL(common::ConfigError, "hydra bench attention runs in one process (world " << launch.world << ")");
  return bench::run_attention_bench(args.json_path);
#else
  (void)launch;
  HYDRA_FAIL(common::ConfigError,
             "hydra bench attention needs the CUDA build (cmake -DHYDRA_CUDA=ON); this is the CPU build");
#endif
}

}  // namespace hydra::launcher
