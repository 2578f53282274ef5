// The preemption contract end to end (docs/INTERFACE.md, exit codes): a signal to a run —
// SIGUSR1 to ONE rank, or SIGINT/SIGTERM as a user or a scheduler sends them; every rank
// agrees at the next step boundary, the checkpoint is complete, every rank exits 75 (so does
// the launcher), and the resumed run continues the uninterrupted run bit for bit.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/train/train_sandbox.h"

namespace hydra::test {

// Starts `launcher` (empty: one process) + `hydra train` of the sandbox's run.yaml with `sets`
// as run `name`, runs `signal_command` ($pid: the started process) after three metrics rows,
// and asserts exit 75, the message, the committed checkpoint of the step it stopped at, and
// that `--resume latest` on `np` ranks (0: one process) continues the uninterrupted run exactly.
inline void expect_signal_saves_and_resumes(const TrainSandbox& box, const std::string& name,
                                            const std::string& launcher, int np,
                                            const std::vector<std::string>& sets, const std::string& signal_command) {
  const auto dir = box.root() / name;
  std::string launch = (launcher.empty() ? "" : launcher + " ") + "'" HYDRA_BIN "' train --config " +
                       (box.root() / "run.yaml").string() + " --set train.steps=100000" +
                       " --set checkpoint.dir=" + (dir / "ckpt").string() +
                       " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  for (const auto& s : sets) launch += " --set " + s;
  const auto [status, log] = box.run_and_signal(name, launch, 3, signal_command, "pkill -9 -f '" + (dir / "ckpt").string() + "'");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  ASSERT_EQ(WEXITSTATUS(status), 75) << log;
  const int stopped = box.metrics_rows(name).rbegin()->first;
  EXPECT_NE(log.find("preempted by a signal at step " + std::to_string(stopped)), std::string::npos) << log;
  EXPECT_NE(log.find("continue with --resume latest"), std::string::npos) << log;
  char step_dir[32];
  std::snprintf(step_dir, sizeof(step_dir), "step_%08d", stopped);
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt" / step_dir / "COMMIT")) << step_dir << "\n" << log;
  std::vector<std::string> more = sets;
  more.insert(more.end(), {"train.steps=100000", "train.stop_at_step=" + std::to_string(stopped + 2)});
  const auto resumed = box.train(name, np, more, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resume: " + (dir / "ckpt" / step_dir).string()), std::string::npos) << resumed.output;
  const auto straight = box.train(name + "_ref", np, more);
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto got = box.metrics_rows(name);
  const auto want = box.metrics_rows(name + "_ref");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << name << " step " << step;
  }
}

// SIGUSR1 to one rank of `hydra train` on `np` ranks under mpirun (the oldest hydra process
// of this run; other tests may be training too).
inline void expect_preemption_resumes_exactly(const TrainSandbox& box, const std::string& name, int np,
                                              const std::vector<std::string>& sets) {
  const std::string ckpt = (box.root() / name / "ckpt").string();
  expect_signal_saves_and_resumes(box, name, TrainSandbox::mpirun_prefix(np), np, sets,
                                  "pkill -USR1 -o -f '^" HYDRA_BIN " train .*" + ckpt + "'");
}

}  // namespace hydra::test
