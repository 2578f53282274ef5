// A report directory written whole or not at all (`hydra diagnose --out`, `hydra sweep
// --out`): into a staging directory beside it, renamed into place at the end, so that an
// error or an interruption leaves nothing half-written and nothing of the user's is
// overwritten (an existing DIR must be an empty directory).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace hydra::launcher {

class OutputStaging {
 public:
  // Refuses (ConfigError naming --out and `command`) a DIR that exists and is not an empty
  // directory, or whose staging directory cannot be made; `tag` names the staging directory
  // (.DIR.<tag>-PID.tmp).
  OutputStaging(const std::string& out, const std::string& command, const std::string& tag);
  ~OutputStaging();  // removes the staging directory unless published
  OutputStaging(const OutputStaging&) = delete;
  OutputStaging& operator=(const OutputStaging&) = delete;

  std::filesystem::path file(const std::string& name) const { return staging_ / name; }
  const std::filesystem::path& dir() const { return staging_; }

  // Renames the staging directory to DIR (RuntimeFailure when it cannot).
  void publish();

 private:
  std::string out_;
  std::string command_;
  std::filesystem::path target_, staging_;
  bool published_ = false;
};

// Writes `text` to `path` (RuntimeFailure naming `command` and the file when it cannot).
void write_text_file(const std::filesystem::path& path, const std::string& text, const std::string& command);

// Runs scripts/<script> on the JSON file `json` (it writes PNGs beside it); the PNG names in
// the staging directory, sorted, or none with the reason in `why`. Debian's python3 first
// (scripts/setup.sh installs python3-matplotlib there), then the one on PATH.
std::vector<std::string> run_plot_script(const std::string& script, const OutputStaging& staging,
                                         const std::string& json, std::string& why);

}  // namespace hydra::launcher
