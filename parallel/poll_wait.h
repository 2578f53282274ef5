// How the MPI communicator waits for a non-blocking call: the polling policy alone, with MPI,
// the clock and the scheduler passed in as functions, so that a test can run it on a fake
// clock and see every poll, yield and sleep it makes.
//
// Why it polls: Open MPI 4.1 (built without a progress thread: ompi_info says "OMPI progress:
// no") moves a non-blocking collective forward only inside MPI_Test or MPI_Wait on each rank.
// Every round of the collective's algorithm, and every 32 KiB fragment of a large message
// through shared memory (btl vader without single-copy), waits for the next such call on the
// ranks involved. A pause of p between calls therefore costs up to p per round, not once per
// call: the policy before 2026-12-04 slept up to 1 ms between calls, and a 1 MiB all-reduce
// over 2 ranks took 20-24 ms instead of ~0.5 ms (docs/PERF.md, 2026-12-04).
//
// Why it yields, and sleeps in a long wait: ranks may outnumber the cores (the tests run 8
// ranks on 2), and other processes share them. A poll that gives its core away between calls
// lets the rank it waits for run; a pure spin would hold the core for a whole time slice. A
// rank that only yields still looks busy to the scheduler, which then leaves other work on
// the core of the rank doing the computing; a sleeping rank's core is idle and takes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "parallel/collective_log.h"

namespace hydra::parallel {

// What the wait loop needs from the outside world.
struct PollHooks {
  std::function<bool()> test;                        // one MPI_Test: true once the call completed
  std::function<CollectiveClock::time_point()> now;  // the clock the deadline is on
  std::function<void()> yield;                       // sched_yield: give the core away, stay runnable
  std::function<void(std::chrono::microseconds)> sleep;  // not runnable for that long
};

// The knobs of the loop (a test describes the loop before 2026-12-04 with them too). After each
// poll that finds the call incomplete: a yield, as long as fewer than `yield_polls` polls were
// made and the wait is younger than `yield_for`; after that a sleep, `sleep_first` doubling to
// `sleep_max`.
struct PollPolicy {
  int64_t yield_polls = INT64_MAX;
  CollectiveClock::duration yield_for = CollectiveClock::duration::max();
  std::chrono::microseconds sleep_first{0};
  std::chrono::microseconds sleep_max{0};
};

// The MPI communicator's policy (the reasons are in poll_wait.cpp).
PollPolicy mpi_poll_policy();

enum class PollEnd { kDone, kExpired };

// Calls hooks.test until it returns true (kDone) or, after a poll that found the call
// incomplete, hooks.now() is past `deadline` (kExpired). A call that is complete at the first
// poll returns without yielding or sleeping.
PollEnd poll_until_done(const PollHooks& hooks, const PollPolicy& policy,
                        CollectiveClock::time_point deadline);

}  // namespace hydra::parallel
