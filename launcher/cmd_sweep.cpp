// `hydra sweep`: one process that runs `hydra bench step` under mpirun for every point of a
// series (layout x rank count) and writes DIR/sweep.json and its plots, whole or not at all
// (launcher/output_staging.h). It never starts MPI itself: a process that has initialised MPI
// (even alone, as a singleton) hands Open MPI's environment to the mpirun it starts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/logging.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "launcher/output_staging.h"
#include "launcher/sweep_launch.h"
#include "launcher/sweep_plan.h"
#include "launcher/sweep_report.h"
#include "launcher/version.h"

namespace hydra::launcher {
namespace {

constexpr const char* kCommand = "hydra sweep";

// The world size this process was started in by mpirun or srun, from their environment (1
// when started alone). MPI is not initialised here, so the launchers' variables are what says.
int launched_world() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    if (const char* v = std::getenv(name)) {
      if (std::string(name) == "SLURM_STEP_NUM_TASKS" && !std::getenv("SLURM_PROCID")) continue;  // not an srun task
      return std::max(1, std::atoi(v));
    }
  }
  return 1;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// "[3/6] pp2 at 4 ranks: ..." with the elapsed time and an estimate of what is left from the
// mean time of the points run so far.
void print_progress(size_t index, size_t total, const PointRun& run, double elapsed, double per_run, int runs_left) {
  const SweepPoint& p = run.point;
  std::string what;
  if (!p.skipped.empty()) {
    what = "skipped: " + p.skipped;
  } else if (run.bench) {
    what = common::strprintf("%.0f tok/s, step %.1f ms", bench_number(run, "tok_s").value_or(0),
                             bench_number(run, "step_ms").value_or(0));
  } else {
    what = common::strprintf("FAILED with exit %d (%s)", run.outcome.exit_code, run.log_file.c_str());
  }
  std::printf("sweep: [%zu/%zu] %s at %d rank%s: %s (elapsed %.0f s, about %.0f s left)\n", index, total,
              p.layout.c_str(), p.ranks, p.ranks == 1 ? "" : "s", what.c_str(), elapsed, per_run * runs_left);
  std::fflush(stdout);
}

// Runs one point into the staging directory's points/ folder.
PointRun run_point(const SweepOptions& options, const std::string& config, const SweepPoint& point,
                   const OutputStaging& staging) {
  PointRun run;
  run.point = point;
  if (!point.skipped.empty()) return run;
  run.json_file = "points/" + point_name(point) + ".json";
  run.log_file = "points/" + point_name(point) + ".log";
  run.command = point_command(options, this_executable(), config, point, staging.file(run.json_file).string(),
                              staging.file(run.log_file).string());
  run.outcome = run_logged(run.command, staging.file(run.log_file).string());
  // The paths as they will be after the rename, relative to DIR.
  run.command.back() = run.json_file;
  for (std::string& word : run.command) {
    if (word.rfind("--output=", 0) == 0) word = "--output=" + run.log_file;
  }
  if (run.outcome.exit_code != 0) return run;
  std::ifstream in(staging.file(run.json_file));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  data::JsonParseResult parsed = data::parse_json(text);
  if (parsed.ok) {
    run.bench = std::move(parsed.value);
  } else {
    run.outcome.tail += "\nhydra sweep: " + run.json_file + " does not parse: " + parsed.error;
  }
  return run;
}

}  // namespace

int run_sweep(const CliArgs& args) {
  if (const int world = launched_world(); world > 1) {
    HYDRA_FAIL(common::ConfigError, "hydra sweep runs in one process and starts mpirun for each point itself "
                                    "(launched on " << world << " ranks); run it without mpirun or srun");
  }
  const SweepOptions options = parse_sweep_options(args, env_or_empty("HYDRA_MPIRUN"));
  const std::vector<SweepPoint> points = plan_sweep(args.config, args.sets, options);
  const Config config = load_config(args.config, args.sets);
  OutputStaging staging(args.out, kCommand, "sweep");
  std::filesystem::create_directory(staging.dir() / "points");
  const std::string config_path = std::filesystem::absolute(args.config).string();
  int to_run = 0;
  for (const SweepPoint& p : points) to_run += p.skipped.empty() ? 1 : 0;
  std::printf("sweep: %s, %s series, %zu points (%d to run), %d timed steps after %d warm-up each\n",
              args.config.c_str(), options.series.c_str(), points.size(), to_run, options.steps, options.warmup);
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  std::vector<PointRun> runs;
  int ran = 0;
  for (const SweepPoint& point : points) {
    runs.push_back(run_point(options, config_path, point, staging));
    ran += point.skipped.empty() ? 1 : 0;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    print_progress(runs.size(), points.size(), runs.back(), elapsed, ran > 0 ? elapsed / ran : 0, to_run - ran);
  }

  SweepHeader header;
  header.version = version_text();
  header.config = args.config;
  header.sets = args.sets;
  header.options = options;
  header.device = config.train.device;
  header.dtype = config.train.dtype;
  header.seq_len = config.train.seq_len;
  common::Json json = sweep_json(header, runs);
  write_text_file(staging.file("sweep.json"), json.dump(2) + "\n", kCommand);
  std::string why;
  const std::vector<std::string> plots = run_plot_script("plot-sweep.py", staging, "sweep.json", why);
  common::Json names = common::Json::array();
  for (const std::string& p : plots) names.push(p);
  json["plots"] = names;
  json["plots_skipped"] = plots.empty() ? common::Json(why) : common::Json();
  write_text_file(staging.file("sweep.json"), json.dump(2) + "\n", kCommand);
  staging.publish();

  const common::Json* all_ran = json.find("all_ran");
  const bool ok = all_ran && all_ran->dump() == "true";
  const common::Json* agree = json.find("losses_agree");
  if (agree && agree->dump() == "false") {
    std::printf("sweep: WARNING: a point's last loss differs from the 1-rank loss by more than %g relative "
                "(loss_agrees in sweep.json)\n", loss_tolerance(config.train.dtype));
  }
  std::printf("sweep: %s in %s/sweep.json%s\n", ok ? "every point ran; figures" : "a point FAILED (exit 4); figures",
              args.out.c_str(), plots.empty() ? (" (no plots: " + why + ")").c_str() : ", plots beside it");
  std::fflush(stdout);
  return ok ? 0 : static_cast<int>(common::ExitCode::kRuntime);
}

}  // namespace hydra::launcher
