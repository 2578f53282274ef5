// SIGINT, SIGTERM and SIGHUP during `hydra data prepare`: the handlers only record the
// signal; the work loop asks received() and unwinds with an error, so that destructors
// remove what was half written instead of the process dying with it on disk. The previous
// handlers come back when the object is destroyed.
#pragma once

#include <csignal>

namespace hydra::data {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received since construction, 0 if none.
  int received() const;

 private:
  struct sigaction previous_[3];
};

}  // namespace hydra::data
