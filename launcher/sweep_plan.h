// `hydra sweep`: what to run. The options checked in full before anything is launched, and the
// points (layout x rank count), each with the --set keys that make its run, or the reason the
// layout cannot use that rank count (from the same checks a run makes: grid, model, pipeline
// split, batch split).
#pragma once

#include <string>
#include <vector>

#include "launcher/cli.h"

namespace hydra::launcher {

struct SweepLayout {
  std::string name;  // "dp", "tp2", "pp4", "tp2pp2", ...
  int tp = 1;
  int pp = 1;
  int degree() const { return tp * pp; }  // ranks one data-parallel replica takes
};

struct SweepOptions {
  std::string series;                    // "weak" or "strong"
  std::vector<int> ranks;                // as given, no repeats
  std::vector<SweepLayout> layouts;      // as given, no repeats
  std::string mpirun;                    // --mpirun, else $HYDRA_MPIRUN, else "mpirun"
  std::vector<std::string> mpirun_args;  // --mpirun-args, split on white space
  std::string launcher = "mpirun";       // "mpirun" or "slurm" (a job per point, sbatch --wait)
  std::vector<std::string> sbatch_args;  // --sbatch-args, split on white space (slurm)
  int steps = 5;                         // timed steps of each point (bench step --steps)
  int warmup = 2;                        // untimed steps first
};

// ConfigError (exit 2) naming the option and the value for anything wrong: --series,
// --ranks, --layouts, --launcher, an --mpirun that is not an executable, --steps, --warmup;
// with --launcher slurm, no sbatch on PATH or no kSweepBatchScript under the working
// directory. `mpirun_env` is $HYDRA_MPIRUN (empty when unset).
SweepOptions parse_sweep_options(const CliArgs& args, const std::string& mpirun_env);

// The batch script of --launcher slurm, relative to the repository's root (the working
// directory, as for slurm/train.sbatch).
inline constexpr const char* kSweepBatchScript = "slurm/sweep.sbatch";

struct SweepPoint {
  std::string layout;             // SweepLayout::name
  int ranks = 1;
  int dp = 1, tp = 1, pp = 1;
  int global_batch = 0;           // train.global_batch of this point
  std::vector<std::string> sets;  // the user's --set, then the point's parallel.* and train.global_batch
  std::string skipped;            // why it is not run; empty: it runs
};

// Every (layout, rank count) point, layouts outer, rank counts inner, in the order given. When
// --ranks holds 1 and --layouts not dp, the 1-rank point (layout dp) comes first all the same:
// every layout is one process there, and the efficiencies and losses compare with it.
// `config` and `sets` are the user's; their own errors are a ConfigError (exit 2).
std::vector<SweepPoint> plan_sweep(const std::string& config, const std::vector<std::string>& sets,
                                   const SweepOptions& options);

// The name of a point's files under DIR/points: "dp-2", "tp2-4", ...
std::string point_name(const SweepPoint& point);

}  // namespace hydra::launcher
