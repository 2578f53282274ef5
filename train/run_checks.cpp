#include "train/run_checks.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"
#include "common/logging.h"
#include "train/resume_rules.h"

namespace hydra::train {
namespace {

namespace fs = std::filesystem;
using common::ConfigError;

// Creates `dir` and writes and removes a probe file in it (a read-only or full filesystem,
// /proc, a path through a file all fail here); ConfigError naming `key` otherwise.
void check_writable_dir(const std::string& key, const std::string& dir, int rank) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    HYDRA_FAIL(ConfigError, key << ": " << dir << " exists and is not a directory");
  }
  fs::create_directories(dir, ec);
  if (ec) HYDRA_FAIL(ConfigError, key << ": cannot create the directory " << dir << ": " << ec.message());
  const std::string probe = dir + "/.hydra_probe_rank" + std::to_string(rank);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  bool ok = fd >= 0 && ::write(fd, "probe\n", 6) == 6;
  int err = errno;
  if (fd >= 0 && ::close(fd) != 0 && ok) ok = false, err = errno;
  ::unlink(probe.c_str());
  if (!ok) HYDRA_FAIL(ConfigError, key << ": cannot write in the directory " << dir << ": " << std::strerror(err));
}

// An existing metrics file must take appended rows; a new one must be creatable.
void check_metrics_path(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  if (fs::is_directory(path, ec)) HYDRA_FAIL(ConfigError, "log.jsonl: " << path << " is a directory, not a file");
  if (!fs::exists(path, ec)) {
    const fs::path parent = fs::path(path).parent_path();
    check_writable_dir("log.jsonl", parent.empty() ? "." : parent.string(), 0);
    return;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  if (fd < 0) HYDRA_FAIL(ConfigError, "log.jsonl: cannot write " << path << ": " << std::strerror(errno));
  ::close(fd);
}

long long count_rows(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return 0;  // (a device such as /dev/full reads forever)
  std::ifstream in(path);
  long long rows = 0;
  for (std::string line; std::getline(in, line);) rows += line.find_first_not_of(" \t\r") != std::string::npos;
  return rows;
}

EarlierRun find_earlier_run(const RunConfig& config) {
  EarlierRun out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(config.checkpoint.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step_", 0) == 0) out.checkpoints.push_back(name);
  }
  std::sort(out.checkpoints.begin(), out.checkpoints.end());
  if (!config.log.jsonl.empty()) out.metrics_rows = count_rows(config.log.jsonl);
  return out;
}

std::string describe(const RunConfig& config, const EarlierRun& earlier) {
  std::string what;
  if (!earlier.checkpoints.empty()) {
    what = "checkpoint.dir " + config.checkpoint.dir + " holds " + std::to_string(earlier.checkpoints.size()) +
           " checkpoint entries of an earlier run (" + earlier.checkpoints.front() +
           (earlier.checkpoints.size() > 1 ? " ... " + earlier.checkpoints.back() : "") + ")";
  }
  if (earlier.metrics_rows > 0) {
    what += (what.empty() ? "" : " and ") + std::string("log.jsonl ") + config.log.jsonl + " holds " +
            std::to_string(earlier.metrics_rows) + " metrics rows";
  }
  return what;
}

// The newest checkpoint --resume will load (an explicit one must read; `latest` skips those
// whose index does not, as restore does) must have been written with the settings that a
// resume keeps.
void check_resume_settings(const RunConfig& config, const RunRequest& request) {
  const bool latest = *request.resume == "latest";
  const std::vector<std::string> candidates =
      latest ? checkpoint::list_committed(config.checkpoint.dir) : std::vector<std::string>{*request.resume};
  for (const std::string& dir : candidates) {
    checkpoint::LoadedCheckpoint index;
    try {
      index = checkpoint::read_index(dir);
    } catch (const common::InputError&) {
      if (latest) continue;
      throw;
    }
    check_resume_config(index.config_json, request.config_json, dir);
    return;
  }
}

// Runs `body` on this rank, then every rank learns the largest exit code any rank reached
// (one all-reduce) and all stop together, each with its own message where it has one.
void on_every_rank(parallel::ParallelContext& ctx, const RunConfig& config, const std::function<void()>& body) {
  int code = 0;
  std::string message;
  try {
    body();
  } catch (const common::HydraError& e) {
    code = static_cast<int>(e.code());
    message = e.what();
  }
  const bool unsaid = ctx.grid.rank != 0 && code == static_cast<int>(common::ExitCode::kUsage);
  bool rank0_said_it = ctx.grid.rank == 0 && code != 0;
  if (ctx.grid.shape.world() > 1) {
    const auto device = at::TensorOptions().device(config.train.device == "cuda" ? at::kCUDA : at::kCPU);
    at::Tensor worst = at::tensor({static_cast<float>(code), rank0_said_it ? 1.f : 0.f}).to(device);
    ctx.world->all_reduce(worst, parallel::ReduceOp::kMax);
    worst = worst.cpu();
    code = static_cast<int>(worst[0].item<float>());
    rank0_said_it = worst[1].item<float>() > 0.5f;
  }
  if (code == 0) return;
  // main() prints config errors on rank 0 only: another rank's own one is said here, unless
  // rank 0 stops for one too (the same probe, most likely).
  if (unsaid && !rank0_said_it) common::log_error("%s", message.c_str());
  if (message.empty()) message = "stopped: another rank found a problem at start (its message is above)";
  if (code == static_cast<int>(common::ExitCode::kUsage)) throw ConfigError(message);
  if (code == static_cast<int>(common::ExitCode::kBadInput)) throw common::InputError(message);
  throw common::RuntimeFailure(message);
}

std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &utc);
  return buf;
}

void move(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    HYDRA_FAIL(common::RuntimeFailure, "--overwrite: cannot move " << from << " to " << to << ": " << std::strerror(errno));
  }
}

void move_aside(const RunConfig& config, const EarlierRun& earlier) {
  const std::string stamp = utc_stamp();
  if (!earlier.checkpoints.empty()) {
    const std::string aside = config.checkpoint.dir + "/replaced_" + stamp;
    std::error_code ec;
    fs::create_directories(aside, ec);
    if (ec) HYDRA_FAIL(common::RuntimeFailure, "--overwrite: cannot create " << aside << ": " << ec.message());
    for (const auto& name : earlier.checkpoints) move(config.checkpoint.dir + "/" + name, aside + "/" + name);
    common::log_warn("--overwrite: moved the earlier run's %zu checkpoint entries to %s", earlier.checkpoints.size(),
                     aside.c_str());
  }
  if (earlier.metrics_rows > 0) {
    const std::string aside = config.log.jsonl + ".replaced_" + stamp;
    move(config.log.jsonl, aside);
    common::log_warn("--overwrite: moved the earlier run's metrics file to %s", aside.c_str());
  }
}

}  // namespace

EarlierRun check_run_start(const RunConfig& config, const RunRequest& request,
                           parallel::ParallelContext& ctx) {
  EarlierRun earlier;
  on_every_rank(ctx, config, [&] {
    check_writable_dir("checkpoint.dir", config.checkpoint.dir, ctx.grid.rank);  // every rank writes its file there
    if (ctx.grid.rank != 0) return;
    check_metrics_path(config.log.jsonl);
    if (request.resume) return check_resume_settings(config, request);
    earlier = find_earlier_run(config);
    if (earlier.empty() || request.overwrite) return;
    HYDRA_FAIL(ConfigError, describe(config, earlier)
                                << ": a new run there would mix with them (and prune them). Continue that run with "
                                   "--resume latest, choose another checkpoint.dir and log.jsonl, or pass --overwrite "
                                   "to move them aside (replaced_<time>; nothing is deleted)");
  });
  return earlier;
}

void set_aside_earlier_run(const RunConfig& config, const EarlierRun& earlier,
                           parallel::ParallelContext& ctx) {
  on_every_rank(ctx, config, [&] {
    if (ctx.grid.rank == 0 && !earlier.empty()) move_aside(config, earlier);
  });
}

}  // namespace hydra::train
