#include "launcher/output_staging.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <system_error>

#include "common/errors.h"

namespace hydra::launcher {

namespace fs = std::filesystem;

OutputStaging::OutputStaging(const std::string& out, const std::string& command, const std::string& tag)
    : out_(out), command_(command) {
  std::error_code ec;
  const fs::path target = fs::absolute(out_, ec);
  if (fs::exists(target) && (!fs::is_directory(target) || !fs::is_empty(target))) {
    HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": exists and is not an empty directory; " << command_
                                             << " writes a new directory and overwrites nothing");
  }
  const fs::path parent = target.parent_path();
  fs::create_directories(parent, ec);
  if (ec) HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": cannot create " << parent.string() << ": " << ec.message());
  staging_ = parent / ("." + target.filename().string() + "." + tag + "-" + std::to_string(::getpid()) + ".tmp");
  if (!fs::create_directory(staging_, ec) || ec) {
    HYDRA_FAIL(common::ConfigError, "--out " << out_ << ": cannot create " << staging_.string() << ": " << ec.message());
  }
  target_ = target;
}

OutputStaging::~OutputStaging() {
  std::error_code ec;
  if (!published_) fs::remove_all(staging_, ec);
}

void OutputStaging::publish() {
  std::error_code ec;
  if (fs::exists(target_)) fs::remove(target_, ec);  // the empty directory the check accepted
  fs::rename(staging_, target_, ec);
  if (ec) HYDRA_FAIL(common::RuntimeFailure, "--out " << out_ << ": cannot move the report into place: " << ec.message());
  published_ = true;
}

void write_text_file(const fs::path& path, const std::string& text, const std::string& command) {
  std::ofstream f(path);
  f << text;
  f.close();
  if (!f) HYDRA_FAIL(common::RuntimeFailure, command << ": cannot write " << path.string());
}

std::vector<std::string> run_plot_script(const std::string& script_name, const OutputStaging& staging,
                                         const std::string& json, std::string& why) {
  const std::string script = std::string(HYDRA_SCRIPTS_DIR) + "/" + script_name;
  if (!fs::exists(script)) {
    why = "the plotting script " + script + " is not there";
    return {};
  }
  int rc = -1;
  for (const char* python : {"/usr/bin/python3", "python3"}) {
    const std::string command = std::string(python) + " '" + script + "' '" + staging.file(json).string() + "' > '" +
                                staging.file("plot.log").string() + "' 2>&1";
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

}  // namespace hydra::launcher
