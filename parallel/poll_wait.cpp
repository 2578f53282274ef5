#include "parallel/poll_wait.h"

#include <algorithm>

namespace hydra::parallel {

PollPolicy mpi_poll_policy() {
  // A yield between every two polls, and never a sleep, until the deadline:
  // - never a sleep, because a sleeping rank holds up every round of the collective
  //   (poll_wait.h); a yield returns at once when nothing else wants the core;
  // - a yield rather than a pure spin, because with more ranks than cores the rank being
  //   waited for may need this core; the waiting rank then runs only for an MPI_Test at a
  //   time.
  // Measured on the 2-core CI machine (docs/PERF.md, 2026-12-04): a 1 MiB all-reduce over 2
  // ranks ~1 ms (from 27-29 ms with sleeps up to 1 ms); the 8-rank tests on 2 cores took as
  // long as before. Spinning 32 polls before the first yield measured the
  // same as yielding at once, within the noise, so the loop keeps the simpler rule.
  return PollPolicy{};
}

PollEnd poll_until_done(const PollHooks& hooks, const PollPolicy& policy,
                        CollectiveClock::time_point deadline) {
  auto pause = policy.sleep_first;
  for (int64_t polls = 1;; ++polls) {
    if (hooks.test()) return PollEnd::kDone;
    if (hooks.now() > deadline) return PollEnd::kExpired;
    if (polls <= policy.spin_polls) continue;
    if (polls <= policy.yield_polls) {
      hooks.yield();
    } else {
      hooks.sleep(pause);
      pause = std::min(pause * 2, policy.sleep_max);
    }
  }
}

}  // namespace hydra::parallel
