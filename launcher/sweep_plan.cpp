#include "launcher/sweep_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "common/errors.h"
#include "data/batch_split.h"
#include "launcher/config_load.h"
#include "launcher/option_values.h"
#include "parallel/pipeline_plan.h"
#include "parallel/process_grid.h"
#include "train/run_config.h"

namespace hydra::launcher {
namespace {

using common::ConfigError;

// "dp", or tpK, ppM or both (tp first: tp2pp2) with K, M whole numbers of at least 2.
SweepLayout parse_layout(const std::string& name, const std::string& list) {
  SweepLayout layout{name};
  if (name == "dp") return layout;
  const auto refuse = [&] {
    HYDRA_FAIL(ConfigError, "--layouts: '" << name << "' in '" << list
                                           << "' is not a layout (dp, tpK, ppM or tpKppM with K, M >= 2, e.g. tp2, pp4, "
                                              "tp2pp2)");
  };
  size_t at = 0;
  for (const std::string kind : {"tp", "pp"}) {
    if (name.compare(at, 2, kind) != 0) continue;
    size_t end = at + 2;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
    const std::optional<long long> degree = whole_number(name.substr(at + 2, end - at - 2));
    if (!degree || *degree < 2 || *degree > 1 << 20) refuse();
    (kind == "tp" ? layout.tp : layout.pp) = static_cast<int>(*degree);
    at = end;
  }
  if (at == 0 || at != name.size()) refuse();
  return layout;
}

// A program name as execvp finds it: a path, or a name on PATH.
bool is_executable(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (::access(((dir.empty() ? "." : dir) + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

template <typename T, typename Key>
void refuse_repeats(const std::vector<T>& items, Key key, const std::string& option, const std::string& text) {
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (key(items[i]) == key(items[j])) {
        HYDRA_FAIL(ConfigError, option << ": '" << key(items[i]) << "' appears twice in '" << text << "'");
      }
    }
  }
}

// Why the user's config with `sets` cannot run on `ranks` processes, or empty: the checks
// `hydra bench step` makes before it builds anything (config, grid, pipeline split, batch split).
std::string why_not(const std::string& config_path, const std::vector<std::string>& sets, int ranks) {
  try {
    const Config config = load_config(config_path, sets);
    const parallel::GridShape shape =
        parallel::resolve_grid_shape(ranks, config.parallel.dp, config.parallel.tp, config.parallel.pp);
    parallel::plan_pipeline_stages(config.model, shape.pp, config.parallel.pp_layers);
    data::make_batch_split(config.train.global_batch, train::per_rank_micro_batch(config, shape.dp), shape.dp, 0);
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

}  // namespace

SweepOptions parse_sweep_options(const CliArgs& args, const std::string& mpirun_env) {
  SweepOptions o;
  if (args.series != "weak" && args.series != "strong") {
    HYDRA_FAIL(ConfigError, "--series: expected weak or strong, got '" << args.series << "'");
  }
  o.series = args.series;
  for (const int64_t n : positive_list("--ranks", args.ranks, {})) {
    if (n > 1 << 20) HYDRA_FAIL(ConfigError, "--ranks: '" << n << "' in '" << args.ranks << "' is too many processes");
    o.ranks.push_back(static_cast<int>(n));
  }
  refuse_repeats(o.ranks, [](int n) { return std::to_string(n); }, "--ranks", args.ranks);
  const std::string layouts = args.layouts.empty() ? "dp" : args.layouts;
  for (const std::string& name : split_list(layouts)) o.layouts.push_back(parse_layout(name, layouts));
  refuse_repeats(o.layouts, [](const SweepLayout& l) { return l.name; }, "--layouts", layouts);
  if (!args.launcher.empty() && args.launcher != "mpirun" && args.launcher != "slurm") {
    HYDRA_FAIL(ConfigError, "--launcher: expected mpirun or slurm, got '" << args.launcher << "'");
  }
  o.launcher = args.launcher.empty() ? "mpirun" : args.launcher;
  if (o.launcher == "slurm") {
    if (!is_executable("sbatch")) HYDRA_FAIL(ConfigError, "--launcher slurm: no sbatch on PATH");
    if (!std::filesystem::is_regular_file(kSweepBatchScript)) {
      HYDRA_FAIL(ConfigError, "--launcher slurm submits " << kSweepBatchScript << ", which is not under the working "
                              "directory " << std::filesystem::current_path().string()
                              << ": run hydra sweep from the repository's root");
    }
  } else if (!args.sbatch_args.empty()) {
    HYDRA_FAIL(ConfigError, "--sbatch-args needs --launcher slurm");
  }
  std::stringstream sbatch_words(args.sbatch_args);
  for (std::string w; sbatch_words >> w;) {
    if (w.rfind("--ntasks=", 0) == 0 || w == "--ntasks" || w.rfind("-n", 0) == 0 || w.rfind("--output", 0) == 0 ||
        w.rfind("--wait", 0) == 0) {
      HYDRA_FAIL(ConfigError, "--sbatch-args: '" << w << "' is the sweep's own (each point's --ntasks, --output "
                              "and --wait)");
    }
    o.sbatch_args.push_back(w);
  }
  o.mpirun = !args.mpirun.empty() ? args.mpirun : !mpirun_env.empty() ? mpirun_env : "mpirun";
  if (!is_executable(o.mpirun)) {
    HYDRA_FAIL(ConfigError, (args.mpirun.empty() ? (mpirun_env.empty() ? "mpirun" : "HYDRA_MPIRUN") : "--mpirun")
                                << ": '" << o.mpirun << "' is not an executable program (a path, or a name on PATH)");
  }
  std::stringstream words(args.mpirun_args);
  for (std::string w; words >> w;) o.mpirun_args.push_back(w);
  o.steps = count_option("--steps", args.steps, o.steps, 1);
  o.warmup = count_option("--warmup", args.warmup, o.warmup, 0);
  return o;
}

std::vector<SweepPoint> plan_sweep(const std::string& config_path, const std::vector<std::string>& sets,
                                   const SweepOptions& options) {
  const Config base = load_config(config_path, sets);  // the user's own errors: exit 2 here
  std::vector<SweepLayout> layouts = options.layouts;
  const bool has_one = std::find(options.ranks.begin(), options.ranks.end(), 1) != options.ranks.end();
  const bool has_dp = std::any_of(layouts.begin(), layouts.end(), [](const SweepLayout& l) { return l.name == "dp"; });
  std::vector<SweepPoint> points;
  auto add = [&](const SweepLayout& layout, int ranks) {
    SweepPoint p;
    p.layout = layout.name;
    p.ranks = ranks;
    p.tp = layout.tp;
    p.pp = layout.pp;
    if (ranks % layout.degree() != 0) {
      p.skipped = layout.name + " needs a multiple of " + std::to_string(layout.degree()) + " ranks";
      points.push_back(p);
      return;
    }
    p.dp = ranks / layout.degree();
    p.global_batch = options.series == "weak" ? base.train.global_batch * p.dp : base.train.global_batch;
    p.sets = sets;
    for (const std::string& s : {"parallel.dp=" + std::to_string(p.dp), "parallel.tp=" + std::to_string(p.tp),
                                 "parallel.pp=" + std::to_string(p.pp),
                                 "train.global_batch=" + std::to_string(p.global_batch)}) {
      p.sets.push_back(s);
    }
    p.skipped = why_not(config_path, p.sets, ranks);
    points.push_back(p);
  };
  if (has_one && !has_dp) add(SweepLayout{"dp"}, 1);
  for (const SweepLayout& layout : layouts) {
    for (const int ranks : options.ranks) add(layout, ranks);
  }
  return points;
}

std::string point_name(const SweepPoint& point) { return point.layout + "-" + std::to_string(point.ranks); }

}  // namespace hydra::launcher
