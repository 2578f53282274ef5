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

}  // namespace hydra::common
