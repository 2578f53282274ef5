// StepTimer on the CPU: each phase gets the time until the next mark, steps are averaged,
// marks outside a step count for nothing, and misuse is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "train/step_timer.h"

namespace {

using hydra::train::StepTimer;

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST(StepTimer, PhasesTakeTheTimeUntilTheNextMark) {
  StepTimer timer(/*cuda=*/false);
  timer.mark("evaluation");  // outside a step: not counted
  for (int step = 0; step < 2; ++step) {
    timer.begin_step();
    timer.mark("forward");
    sleep_ms(30);
    timer.mark("backward");
    sleep_ms(10);
    timer.end_step();
    sleep_ms(20);  // between steps: no phase
  }
  const auto phases = timer.finish();
  EXPECT_EQ(phases.steps, 2);
  ASSERT_EQ(phases.phase_ms.count("evaluation"), 0u);
  EXPECT_GE(phases.phase_ms.at("forward"), 30.0);
  EXPECT_LT(phases.phase_ms.at("forward"), 30.0 + 1000.0);
  EXPECT_GE(phases.phase_ms.at("backward"), 10.0);
  EXPECT_LT(phases.phase_ms.at("backward"), phases.phase_ms.at("forward"));
  // From the first step's start to the last one's end, per step: the gap between steps is in it.
  EXPECT_GE(phases.step_ms, 40.0 + 20.0 / 2);
  EXPECT_GE(phases.host_submit_ms, 40.0);
  EXPECT_LT(phases.host_submit_ms, phases.step_ms);
}

TEST(StepTimer, RefusesMarksOutOfOrder) {
  StepTimer timer(false);
  EXPECT_THROW(timer.end_step(), std::exception);
  timer.begin_step();
  EXPECT_THROW(timer.begin_step(), std::exception);
  EXPECT_THROW(timer.finish(), std::exception);
  timer.end_step();
  EXPECT_EQ(timer.finish().steps, 1);
}

}  // namespace
