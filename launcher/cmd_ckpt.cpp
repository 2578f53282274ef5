// `hydra ckpt inspect DIR [--json]` (checkpoint/inspect.h) and `hydra ckpt consolidate DIR
// --output FILE` (checkpoint/consolidate.h). Rank 0 does the work.
#include <cstdio>

#include "checkpoint/consolidate.h"
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

int run_ckpt_consolidate(const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (launch.rank != 0) return 0;
  const int count = checkpoint::consolidate_checkpoint(args.target, args.output);
  std::printf("consolidated %d parameters of %s into %s\n", count, args.target.c_str(), args.output.c_str());
  return 0;
}

}  // namespace hydra::launcher
