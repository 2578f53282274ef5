// `hydra diagnose`: measures a config (train/diagnose.h) and writes the report into --out DIR
// whole or not at all: into a staging directory beside it, renamed into place at the end, so
// that an error or an interruption leaves nothing half-written and nothing of the user's is
// overwritten (an existing --out must be an empty directory).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "common/errors.h"
#include "common/json.h"
#include "launcher/commands.h"
#include "launcher/option_values.h"
#include "launcher/version.h"
#include "train/diagnose.h"

namespace hydra::launcher {
namespace {

namespace fs = std::filesystem;

// "1,4,8": positive whole numbers (ConfigError naming the option otherwise).
std::vector<int64_t> int_list(const std::string& option, const std::string& text, std::vector<int64_t> fallback) {
  if (text.empty()) return fallback;
  std::vector<int64_t> out;
  for (const std::string& item : split_list(text)) {
    const std::optional<long long> v = whole_number(item);
    if (!v || *v < 1) {
      HYDRA_FAIL(common::ConfigError, option << ": '" << item << "' in '" << text << "' is not a positive whole number");
    }
    out.push_back(*v);
  }
  return out;
}

// The staging directory of the report: removed unless published.
class ReportStaging {
 public:
  explicit ReportStaging(const std::string& out) : out_(out) {
    std::error_code ec;
    const fs::path target = fs::absolute(out_, ec);
    if (fs::exists(target) && (!fs::is_directory(target) || !fs::is_empty(target))) {
      HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": exists and is not an empty directory; hydra diagnose "
                                                      "writes a new directory and overwrites nothing");
    }
    const fs::path parent = target.parent_path();
    fs::create_directories(parent, ec);
    if (ec) HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": cannot create " << parent.string() << ": " << ec.message());
    staging_ = parent / ("." + target.filename().string() + ".diagnose-" + std::to_string(::getpid()) + ".tmp");
    if (!fs::create_directory(staging_, ec) || ec) {
      HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": cannot create " << staging_.string() << ": " << ec.message());
    }
    target_ = target;
  }
  ~ReportStaging() {
    std::error_code ec;
    if (!published_) fs::remove_all(staging_, ec);
  }
  ReportStaging(const ReportStaging&) = delete;
  ReportStaging& operator=(const ReportStaging&) = delete;

  fs::path file(const std::string& name) const { return staging_ / name; }
  const fs::path& dir() const { return staging_; }

  void publish() {
    std::error_code ec;
    if (fs::exists(target_)) fs::remove(target_, ec);  // the empty directory the check accepted
    fs::rename(staging_, target_, ec);
    if (ec) HYDRA_FAIL(common::RuntimeFailure, "--out " << out_ << ": cannot move the report into place: " << ec.message());
    published_ = true;
  }

 private:
  std::string out_;
  fs::path target_, staging_;
  bool published_ = false;
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.close();
  if (!f) HYDRA_FAIL(common::RuntimeFailure, "hydra diagnose: cannot write " << path.string());
}

// The plots (scripts/plot-diagnose.py); the PNG names made, or none with the reason in `why`.
// Debian's python3 first (scripts/setup.sh installs python3-matplotlib there), then the one on
// PATH (a GPU machine's, with its own matplotlib).
std::vector<std::string> plot(const ReportStaging& staging, std::string& why) {
  const std::string script = std::string(HYDRA_SCRIPTS_DIR) + "/plot-diagnose.py";
  if (!fs::exists(script)) {
    why = "the plotting script " + script + " is not there";
    return {};
  }
  int rc = -1;
  for (const char* python : {"/usr/bin/python3", "python3"}) {
    const std::string command = std::string(python) + " '" + script + "' '" + staging.file("report.json").string() +
                                "' > '" + staging.file("plot.log").string() + "' 2>&1";
    rc = std::system(command.c_str());
    if (rc == 0) break;
  }
  std::vector<std::string> figures;
  if (rc == 0) {
    for (const auto& entry : fs::directory_iterator(staging.dir())) {
      if (entry.path().extension() == ".png") figures.push_back(entry.path().filename().string());
    }
    std::error_code ec;
    fs::remove(staging.file("plot.log"), ec);
  } else {
    why = "python3 " + script + " failed (plot.log says why; Debian: apt install python3-matplotlib)";
  }
  std::sort(figures.begin(), figures.end());
  return figures;
}

}  // namespace

int run_diagnose(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (launch.world > 1) {
    HYDRA_FAIL(common::ConfigError, "hydra diagnose runs in one process (launched on " << launch.world << " ranks)");
  }
  train::DiagnoseOptions o;
  if (!args.sections.empty()) o.sections = split_list(args.sections);
  o.batches = int_list("--batches", args.batches, o.batches);
  o.seqs = int_list("--seqs", args.seqs, o.seqs);
  o.repeats = static_cast<int>(int_list("--repeats", args.repeats, {o.repeats}).at(0));
  o.steps = static_cast<int>(int_list("--steps", args.steps, {o.steps}).at(0));
  train::check_diagnose_options(o, config.model);  // at start: before any directory is made or layer built
  ReportStaging staging(args.out);
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
  write_text(staging.file("report.json"), json.dump(2) + "\n");
  std::string why;
  const std::vector<std::string> figures = plot(staging, why);
  std::string md = train::diagnose_markdown(report, figures);
  if (figures.empty()) md += "\n(No plots: " + why + ".)\n";
  write_text(staging.file("report.md"), md);
  staging.publish();
  std::printf("diagnose: report in %s/report.md (every number in report.json%s)\n", args.out.c_str(),
              figures.empty() ? "; no plots" : ", plots beside it");
  return 0;
}

}  // namespace hydra::launcher
