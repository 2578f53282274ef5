// `hydra sweep`: starting one point's run, `mpirun [ARGS] -np N <hydra> bench step ...`, as a
// child process with its output in a log file, and waiting for it.
#pragma once

#include <string>
#include <vector>

#include "launcher/sweep_plan.h"

namespace hydra::launcher {

// The command line of `point`: the mpirun of `options` with its extra arguments, -np, this
// hydra executable (`hydra`), `bench step --config CONFIG --set ...` and the point's JSON file.
// With the slurm launcher that mpirun line is the argument list of `sbatch --wait --ntasks=N
// --job-name=hydra-sweep-NAME --output=LOG --open-mode=append [sbatch args] slurm/sweep.sbatch`:
// one job per point, whose output goes to the point's log, and whose exit status sbatch returns.
std::vector<std::string> point_command(const SweepOptions& options, const std::string& hydra, const std::string& config,
                                       const SweepPoint& point, const std::string& json_path,
                                       const std::string& log_path);

struct ChildOutcome {
  int exit_code = 0;     // the exit status; 128 + N for a signal N; 127 when it could not start
  double seconds = 0;    // wall time from start to end
  std::string tail;      // the last lines of its output (at most ~4 KiB), for the report
};

// Runs `argv` (argv[0] found on PATH as execvp does) with stdout and stderr appended to
// `log_path`; returns when it has ended.
ChildOutcome run_logged(const std::vector<std::string>& argv, const std::string& log_path);

// The path of the running executable (/proc/self/exe), for the points to run the same hydra.
std::string this_executable();

}  // namespace hydra::launcher
