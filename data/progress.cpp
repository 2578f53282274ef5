#include "data/progress.h"

#include <unistd.h>

#include <cstdio>

namespace hydra::data {
namespace {

std::string human(double v, const char* unit) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2f G%s", v / 1e9, unit);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M%s", v / 1e6, unit);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1f k%s", v / 1e3, unit);
  else std::snprintf(buf, sizeof buf, "%.0f %s", v, unit);
  return buf;
}

std::string clock(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return buf;
}

}  // namespace

Progress::Progress(std::string label, uint64_t total_bytes, bool enabled)
    : label_(std::move(label)), total_(total_bytes), enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(uint64_t bytes, uint64_t tokens) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.25 : 10.0)) return;
  last_ = now;
  print(bytes, tokens, false);
}

void Progress::print(uint64_t bytes, uint64_t tokens, bool final_line) {
  const double t = elapsed_seconds();
  const double fraction = total_ ? static_cast<double>(bytes) / static_cast<double>(total_) : 1.0;
  const double eta = fraction > 0 ? t * (1 - fraction) / fraction : 0;
  constexpr int kWidth = 24;
  std::string bar(kWidth, ' ');
  for (int i = 0; i < static_cast<int>(fraction * kWidth + 1e-9) && i < kWidth; ++i) bar[i] = '#';
  std::fprintf(stderr, "%s%s [%s] %5.1f%%  %s / %s  %s  %s/s  ETA %s%s", tty_ ? "\r" : "", label_.c_str(),
               bar.c_str(), 100 * fraction, human(static_cast<double>(bytes), "B").c_str(),
               human(static_cast<double>(total_), "B").c_str(), human(static_cast<double>(tokens), "tok").c_str(),
               human(t > 0 ? tokens / t : 0, "tok").c_str(), clock(final_line ? 0 : eta).c_str(),
               tty_ ? "\033[K" : "\n");
  drawn_ = tty_;
  std::fflush(stderr);
}

void Progress::finish(const std::string& summary) {
  if (!enabled_) return;
  if (drawn_) std::fputc('\n', stderr);
  std::fprintf(stderr, "%s %s\n", label_.c_str(), summary.c_str());
  std::fflush(stderr);
}

}  // namespace hydra::data
