// The MPI communicator's wait loop (parallel/poll_wait.h) on a fake clock: every poll, yield
// and sleep it makes is recorded, and time moves only when the loop acts (1 us per poll or
// yield, the asked length per sleep), so the checks below are exact and take no real time.
//
// The properties, and why:
// - progress: while a call is in flight, MPI_Test runs at least every kMaxGap, also after a
//   long wait for a late peer. Open MPI advances a collective only inside MPI_Test, one round
//   or one 32 KiB fragment per visit, so a longer gap is paid again at every round (the loop
//   before 2026-12-04 slept up to 1 ms: 20-24 ms for a 1 MiB all-reduce over 2 ranks).
// - sharing: the loop never makes more than kMaxPollsInARow polls without giving the core
//   away, so on oversubscribed cores (8 ranks on 2 in the tests) the rank being waited for
//   runs; a short wait (a collective moving) never sleeps, and a long one (a peer computing)
//   sleeps most of the time, leaving the core idle for others.
// - the deadline: kExpired only once the clock is past it, after a poll that found the call
//   still in flight; a call complete at the first poll neither yields nor sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "parallel/poll_wait.h"

namespace hydra::parallel {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr microseconds kMaxGap{100};
constexpr int64_t kMaxPollsInARow = 64;

// A fake MPI call that completes at the first poll at or after `done_at`.
struct FakeWorld {
  CollectiveClock::time_point t{};
  CollectiveClock::time_point done_at = CollectiveClock::time_point::max();
  std::vector<CollectiveClock::time_point> polls;
  int64_t yields = 0;
  int64_t sleeps = 0;
  CollectiveClock::duration slept{0};
  int64_t polls_in_a_row = 0;      // since the last yield or sleep
  int64_t most_polls_in_a_row = 0;

  PollHooks hooks() {
    return {[this] {
              polls.push_back(t);
              most_polls_in_a_row = std::max(most_polls_in_a_row, ++polls_in_a_row);
              const bool done = t >= done_at;
              t += microseconds(1);
              return done;
            },
            [this] { return t; },
            [this] {
              ++yields;
              polls_in_a_row = 0;
              t += microseconds(1);
            },
            [this](microseconds d) {
              ++sleeps;
              slept += d;
              polls_in_a_row = 0;
              t += d;
            }};
  }
  CollectiveClock::duration longest_gap() const {
    CollectiveClock::duration gap{0};
    for (size_t i = 1; i < polls.size(); ++i) gap = std::max(gap, polls[i] - polls[i - 1]);
    return gap;
  }
};

CollectiveClock::time_point at(CollectiveClock::duration d) { return CollectiveClock::time_point{} + d; }

// A peer `late` behind: the call completes only then.
FakeWorld wait_for_peer(const PollPolicy& policy, CollectiveClock::duration late) {
  FakeWorld w;
  w.done_at = at(late);
  EXPECT_EQ(poll_until_done(w.hooks(), policy, at(std::chrono::seconds(60))), PollEnd::kDone);
  EXPECT_GE(w.t, w.done_at);
  return w;
}

TEST(PollWait, ACallInFlightIsPolledAtLeastEvery100us) {
  for (const auto late : {microseconds(50), microseconds(5000), microseconds(300000)}) {
    const FakeWorld w = wait_for_peer(mpi_poll_policy(), late);
    EXPECT_LE(w.longest_gap(), kMaxGap) << "peer " << late.count() << " us late";
    // Completion is seen within one gap of the peer's arrival.
    EXPECT_LE(w.polls.back() - w.done_at, kMaxGap) << "peer " << late.count() << " us late";
  }
}

TEST(PollWait, ThePolicyBefore2026_12_04SleptUpTo1msBetweenPolls) {
  // The check above against the loop this file replaced (64 yields, then sleeps of 20 us
  // doubling to 1 ms): it fails, so the check can tell the two apart.
  PollPolicy before;
  before.yield_polls = 64;
  before.sleep_first = microseconds(20);
  before.sleep_max = microseconds(1000);
  const FakeWorld w = wait_for_peer(before, microseconds(5000));
  EXPECT_GT(w.longest_gap(), kMaxGap);
  EXPECT_GE(w.longest_gap(), microseconds(1000));
}

TEST(PollWait, TheCoreIsGivenAwayBetweenPolls) {
  for (const auto late : {microseconds(50), microseconds(5000), microseconds(300000)}) {
    const FakeWorld w = wait_for_peer(mpi_poll_policy(), late);
    EXPECT_LE(w.most_polls_in_a_row, kMaxPollsInARow) << "peer " << late.count() << " us late";
    EXPECT_GT(w.yields + w.sleeps, 0);
  }
}

TEST(PollWait, AWaitOfAFewMillisecondsNeverSleeps) {
  for (const auto late : {microseconds(50), microseconds(1000), microseconds(5000)}) {
    const FakeWorld w = wait_for_peer(mpi_poll_policy(), late);
    EXPECT_EQ(w.sleeps, 0) << "peer " << late.count() << " us late";
  }
}

TEST(PollWait, ALongWaitLeavesTheCoreIdleMostOfTheTime) {
  const auto late = milliseconds(300);
  const FakeWorld w = wait_for_peer(mpi_poll_policy(), late);
  EXPECT_GE(w.slept, late * 9 / 10);
}

TEST(PollWait, ACompleteCallReturnsAtTheFirstPoll) {
  FakeWorld w;
  w.done_at = at(microseconds(0));
  EXPECT_EQ(poll_until_done(w.hooks(), mpi_poll_policy(), at(std::chrono::seconds(60))), PollEnd::kDone);
  EXPECT_EQ(w.polls.size(), 1u);
  EXPECT_EQ(w.yields + w.sleeps, 0);
  // Also when the deadline has already passed (the call is not timed out: it is done).
  FakeWorld late;
  late.t = at(std::chrono::seconds(2));
  late.done_at = at(microseconds(0));
  EXPECT_EQ(poll_until_done(late.hooks(), mpi_poll_policy(), at(std::chrono::seconds(1))), PollEnd::kDone);
}

TEST(PollWait, ACallThatNeverCompletesExpiresJustPastTheDeadline) {
  FakeWorld w;
  const auto deadline = at(milliseconds(20));
  EXPECT_EQ(poll_until_done(w.hooks(), mpi_poll_policy(), deadline), PollEnd::kExpired);
  EXPECT_GT(w.t, deadline);
  EXPECT_LE(w.polls.back(), deadline + kMaxGap);  // the last poll came when it was due, not later
  // Every poll but the last came before the deadline: it did not give up early.
  EXPECT_LE(w.polls[w.polls.size() - 2], deadline);
}

}  // namespace
}  // namespace hydra::parallel
