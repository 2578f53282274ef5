// Logging setup: spdlog, every line tagged with the rank. Only rank 0 prints at the
// configured level unless all_ranks is set; other ranks still print warnings and errors,
// so a failure on any rank is never silent.
#pragma once

#include <string>

namespace hydra::common {

struct LogSetup {
  int rank = 0;
  int world = 1;
  std::string level = "info";  // trace|debug|info|warn|error
  bool all_ranks = false;
};

// Installs the default spdlog logger (stderr). Safe to call again with new settings.
void setup_logging(const LogSetup& setup);

// printf-style logging through that logger. Code that sees LibTorch's headers must log
// through these, not spdlog: LibTorch 2.x ships its own fmt, which breaks spdlog's headers
// in any translation unit that has LibTorch on its include path.
void log_debug(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char* format, ...) __attribute__((format(printf, 1, 2)));

// printf into a std::string.
std::string strprintf(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace hydra::common
