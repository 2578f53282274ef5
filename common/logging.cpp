#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace hydra::common {

void setup_logging(const LogSetup& setup) {
  // A fresh logger each call (set_default_logger replaces the old one), so calling
  // setup_logging again after the config is read is safe.
  auto logger = std::make_shared<spdlog::logger>(
      "hydra", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  logger->set_pattern("[%H:%M:%S] [rank " + std::to_string(setup.rank) + "/" +
                      std::to_string(setup.world) + "] [%^%l%$] %v");
  auto level = spdlog::level::from_str(setup.level);
  if (setup.rank != 0 && !setup.all_ranks && level < spdlog::level::warn) {
    level = spdlog::level::warn;
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace hydra::common
