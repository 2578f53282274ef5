#include "parallel/poll_wait.h"

#include <algorithm>

namespace hydra::parallel {

PollPolicy mpi_poll_policy() {
  // Yield between polls for the first 10 ms of a wait, then sleep 50 us between polls (about
  // 100 us with Linux's default 50 us timer slack):
  // - no sleep while a call is likely moving: a sleeping rank holds up every round of the
  //   collective (poll_wait.h), and a yield returns at once when nothing else wants the core.
  //   10 ms is longer than any collective the CPU runs takes on 2 quiet cores (a 16 MiB
  //   all-reduce over 2 ranks: 7.5 ms), so a wait past it is a wait for a peer that computes;
  // - then short sleeps: the core is idle for other ranks and processes (a pipeline stage waits
  //   for its neighbour for a whole micro-batch), and when the peer arrives each round of the
  //   collective pays ~0.1 ms, not the 1 ms the loop before 2026-12-04 slept.
  // Measured on the 2-core CI machine (docs/PERF.md, 2026-12-04), against the old loop and a
  // yield without ever sleeping, with other processes loading the cores: the 1 MiB all-reduce
  // over 2 ranks took 26-29 ms with the old loop, 0.4-3 ms yielding; the tiny config's pp2
  // step (median of 4) 448 ms with the old loop, 611 ms never sleeping, 470 ms with sleeps
  // after 2 ms of yields. tp2 (many 128 KiB all-reduces) 791 ms old, 471 never sleeping, 463.
  // Spinning 32 polls before the first yield measured the same as yielding at once.
  PollPolicy p;
  p.yield_for = std::chrono::milliseconds(10);
  p.sleep_first = p.sleep_max = std::chrono::microseconds(50);
  return p;
}

PollEnd poll_until_done(const PollHooks& hooks, const PollPolicy& policy,
                        CollectiveClock::time_point deadline) {
  const auto began = hooks.now();
  auto pause = policy.sleep_first;
  for (int64_t polls = 1;; ++polls) {
    if (hooks.test()) return PollEnd::kDone;
    const auto now = hooks.now();
    if (now > deadline) return PollEnd::kExpired;
    if (polls <= policy.yield_polls && now - began < policy.yield_for) {
      hooks.yield();
    } else {
      hooks.sleep(pause);
      pause = std::min(pause * 2, policy.sleep_max);
    }
  }
}

}  // namespace hydra::parallel
