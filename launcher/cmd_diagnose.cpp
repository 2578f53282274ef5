// `hydra diagnose`: measures a config (train/diagnose.h) and writes the report into --out DIR
// whole or not at all (launcher/output_staging.h).
#include <cstdio>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/json.h"
#include "launcher/commands.h"
#include "launcher/option_values.h"
#include "launcher/output_staging.h"
#include "launcher/version.h"
#include "train/diagnose.h"

namespace hydra::launcher {

int run_diagnose(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (launch.world > 1) {
    HYDRA_FAIL(common::ConfigError, "hydra diagnose runs in one process (launched on " << launch.world << " ranks)");
  }
  train::DiagnoseOptions o;
  if (!args.sections.empty()) o.sections = split_list(args.sections);
  o.batches = positive_list("--batches", args.batches, o.batches);
  o.seqs = positive_list("--seqs", args.seqs, o.seqs);
  o.repeats = static_cast<int>(positive_list("--repeats", args.repeats, {o.repeats}).at(0));
  o.steps = static_cast<int>(positive_list("--steps", args.steps, {o.steps}).at(0));
  train::check_diagnose_options(o, config.model);  // at start: before any directory is made or layer built
  OutputStaging staging(args.out, "hydra diagnose", "diagnose");
  o.progress = [](const std::string& line) {
    std::printf("diagnose: %s\n", line.c_str());
    std::fflush(stdout);
  };
  std::printf("diagnose: %s on %s (%s), sections", args.config.c_str(), config.train.device.c_str(),
              config.train.dtype.c_str());
  for (const auto& s : o.sections) std::printf(" %s", s.c_str());
  std::printf("\n");
  std::fflush(stdout);
  const train::DiagnoseReport report = train::run_diagnose(config, o);
  common::Json json = train::diagnose_json(report);
  json["version"] = version_text();
  json["config"] = args.config;
  common::Json sets = common::Json::array();
  for (const auto& s : args.sets) sets.push(s);
  json["sets"] = sets;
  write_text_file(staging.file("report.json"), json.dump(2) + "\n", "hydra diagnose");
  std::string why;
  const std::vector<std::string> figures = run_plot_script("plot-diagnose.py", staging, "report.json", why);
  std::string md = train::diagnose_markdown(report, figures);
  if (figures.empty()) md += "\n(No plots: " + why + ".)\n";
  write_text_file(staging.file("report.md"), md, "hydra diagnose");
  staging.publish();
  std::printf("diagnose: report in %s/report.md (every number in report.json%s)\n", args.out.c_str(),
              figures.empty() ? "; no plots" : ", plots beside it");
  return 0;
}

}  // namespace hydra::launcher
