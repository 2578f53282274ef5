#include "launcher/sweep_launch.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"

extern char** environ;

namespace hydra::launcher {
namespace {

constexpr size_t kTailBytes = 4096;

// The last kTailBytes of a file, from the start of a line.
std::string file_tail(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() <= kTailBytes) return text;
  text = text.substr(text.size() - kTailBytes);
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(newline + 1);
}

}  // namespace

std::vector<std::string> point_command(const SweepOptions& options, const std::string& hydra, const std::string& config,
                                       const SweepPoint& point, const std::string& json_path,
                                       const std::string& log_path) {
  std::vector<std::string> argv;
  if (options.launcher == "slurm") {
    argv = {"sbatch", "--wait", "--ntasks=" + std::to_string(point.ranks), "--job-name=hydra-sweep-" + point_name(point),
            "--output=" + log_path, "--open-mode=append"};
    argv.insert(argv.end(), options.sbatch_args.begin(), options.sbatch_args.end());
    argv.push_back(kSweepBatchScript);
  }
  argv.push_back(options.mpirun);
  argv.insert(argv.end(), options.mpirun_args.begin(), options.mpirun_args.end());
  for (const std::string& word : {std::string("-np"), std::to_string(point.ranks), hydra, std::string("bench"),
                                  std::string("step"), std::string("--config"), config}) {
    argv.push_back(word);
  }
  for (const std::string& s : point.sets) argv.insert(argv.end(), {"--set", s});
  for (const std::string& word : {std::string("--steps"), std::to_string(options.steps), std::string("--warmup"),
                                  std::to_string(options.warmup), std::string("--json"), json_path}) {
    argv.push_back(word);
  }
  return argv;
}

ChildOutcome run_logged(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &files, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  ChildOutcome out;
  if (rc != 0) {
    out.exit_code = 127;
    out.tail = "cannot start " + argv[0] + ": " + std::strerror(rc);
    return out;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) HYDRA_FAIL(common::RuntimeFailure, "hydra sweep: waitpid: " << std::strerror(errno));
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  out.tail = file_tail(log_path);
  return out;
}

std::string this_executable() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) HYDRA_FAIL(common::RuntimeFailure, "hydra sweep: cannot find its own executable: " << ec.message());
  return exe.string();
}

}  // namespace hydra::launcher
