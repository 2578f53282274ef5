// A progress line on stderr for long jobs: done/total, throughput, ETA. On a terminal it
// redraws one line a few times a second; otherwise it prints a line every 10 s.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hydra::data {

class Progress {
 public:
  Progress(std::string label, uint64_t total_bytes, bool enabled);
  // bytes: input consumed so far; tokens: produced so far.
  void update(uint64_t bytes, uint64_t tokens);
  // Ends the redrawn line (if any) and prints `summary`.
  void finish(const std::string& summary);
  double elapsed_seconds() const;

 private:
  void print(uint64_t bytes, uint64_t tokens, bool final_line);

  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace hydra::data
