// `hydra ckpt inspect DIR [--json]` (checkpoint/inspect.h). Rank 0 reads; every rank exits
// with the same code: 0 verified, 3 incomplete or damaged.
#include <cstdio>

#include "checkpoint/inspect.h"
#include "common/errors.h"
#include "launcher/commands.h"

namespace hydra::launcher {

int run_ckpt_inspect(const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (launch.rank != 0) return 0;
  const checkpoint::InspectReport report = checkpoint::inspect_checkpoint(args.target);
  std::printf("%s", args.json ? (report.json.dump(2) + "\n").c_str() : report.text.c_str());
  std::fflush(stdout);
  if (!report.verified) std::fprintf(stderr, "hydra: error: %s\n", report.problem.c_str());
  return report.verified ? 0 : static_cast<int>(common::ExitCode::kBadInput);
}

}  // namespace hydra::launcher
