#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>

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

namespace {

std::string vformat(const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, format, args);
  return out;
}

}  // namespace

std::string strprintf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::string out = vformat(format, args);
  va_end(args);
  return out;
}

#define HYDRA_DEFINE_LOG(fn, level)             \
  void fn(const char* format, ...) {            \
    va_list args;                               \
    va_start(args, format);                     \
    const std::string text = vformat(format, args); \
    va_end(args);                               \
    spdlog::log(level, "{}", text);             \
  }
HYDRA_DEFINE_LOG(log_debug, spdlog::level::debug)
HYDRA_DEFINE_LOG(log_info, spdlog::level::info)
HYDRA_DEFINE_LOG(log_warn, spdlog::level::warn)
HYDRA_DEFINE_LOG(log_error, spdlog::level::err)
#undef HYDRA_DEFINE_LOG

}  // namespace hydra::common
