// Runs the real `hydra` binary in a child process and captures its exit code and output,
// so launcher tests assert what a user sees: the exit code and the message.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace hydra::test {

struct HydraRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// `launcher` goes in front of the binary (e.g. "mpirun -np 2"); empty: one plain process.
inline HydraRun run_hydra(const std::vector<std::string>& args, const std::string& out_file,
                          const std::string& launcher = "") {
  std::string cmd = (launcher.empty() ? "" : launcher + " ") + shell_quote(HYDRA_BIN);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " > " + shell_quote(out_file) + " 2>&1";
  const int status = std::system(cmd.c_str());
  HydraRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(out_file);
  std::stringstream ss;
  ss << in.rdbuf();
  run.output = ss.str();
  return run;
}

}  // namespace hydra::test
