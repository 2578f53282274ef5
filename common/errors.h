// Typed errors and the exit codes they map to (docs/INTERFACE.md, "Exit codes").
// Code throws one of these; only main() turns it into a process exit code, so every
// component reports failures the same way and tests can assert the type.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hydra::common {

enum class ExitCode : int {
  kSuccess = 0,
  kUsage = 2,        // bad command line or config
  kBadInput = 3,     // bad data or checkpoint
  kRuntime = 4,      // non-finite loss under halt, collective timeout, library failure
  kPreempted = 75,   // saved a checkpoint on SIGTERM/SIGINT/SIGUSR1 and stopped
};

class HydraError : public std::runtime_error {
 public:
  HydraError(ExitCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// A config file, a --set value or a command-line argument is wrong (exit 2).
struct ConfigError : HydraError {
  explicit ConfigError(const std::string& what) : HydraError(ExitCode::kUsage, what) {}
};
// Data or a checkpoint on disk is missing, unreadable or inconsistent (exit 3).
struct InputError : HydraError {
  explicit InputError(const std::string& what) : HydraError(ExitCode::kBadInput, what) {}
};
// Something failed while running: a library call, a collective timeout (exit 4).
struct RuntimeFailure : HydraError {
  explicit RuntimeFailure(const std::string& what) : HydraError(ExitCode::kRuntime, what) {}
};

// The run saved a checkpoint on SIGTERM/SIGINT/SIGUSR1 and stops so that it can be requeued (75).
struct Preempted : HydraError {
  explicit Preempted(const std::string& what) : HydraError(ExitCode::kPreempted, what) {}
};

// Builds a message from stream pieces: HYDRA_FAIL(InputError, "shard " << path << " ...").
#define HYDRA_FAIL(ErrorType, pieces)                      \
  do {                                                      \
    std::ostringstream hydra_fail_os_;                      \
    hydra_fail_os_ << pieces;                               \
    throw ErrorType(hydra_fail_os_.str());                  \
  } while (0)

// Internal invariant; a violation is a bug, reported with file and line.
#define HYDRA_CHECK(cond, pieces)                                                    \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      HYDRA_FAIL(::hydra::common::RuntimeFailure,                                     \
                 __FILE__ << ":" << __LINE__ << ": check failed: " #cond ": " << pieces); \
    }                                                                                 \
  } while (0)

}  // namespace hydra::common
