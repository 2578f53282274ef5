#include "data/stop_signals.h"

namespace hydra::data {
namespace {

constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

// A handler can reach nothing else; one process runs one prepare at a time.
volatile std::sig_atomic_t g_received = 0;

void record(int sig) {
  if (g_received == 0) g_received = sig;
}

}  // namespace

StopSignals::StopSignals() {
  g_received = 0;
  struct sigaction action {};
  action.sa_handler = record;
  sigemptyset(&action.sa_mask);
  for (int i = 0; i < 3; ++i) {
    sigaction(kSignals[i], &action, &previous_[i]);
    // A signal the parent chose to ignore (nohup, a script's background job) stays ignored.
    if (previous_[i].sa_handler == SIG_IGN) sigaction(kSignals[i], &previous_[i], nullptr);
  }
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &previous_[i], nullptr);
}

int StopSignals::received() const { return g_received; }

}  // namespace hydra::data
