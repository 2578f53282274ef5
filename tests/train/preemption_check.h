// The preemption contract end to end (docs/INTERFACE.md, exit codes): SIGUSR1 to ONE rank of
// a run; every rank agrees at the next step boundary, the checkpoint is complete, every rank
// exits 75 (so does mpirun), and the resumed run continues the uninterrupted run bit for bit.
#pragma once

#include <sys/wait.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/train/train_sandbox.h"

namespace hydra::test {

// `hydra train` of the sandbox's run.yaml with `sets` on `np` ranks as run `name`.
inline void expect_preemption_resumes_exactly(const TrainSandbox& box, const std::string& name, int np,
                                              const std::vector<std::string>& sets) {
  const auto dir = box.root() / name;
  std::string launch = TrainSandbox::mpirun_prefix(np) + " '" HYDRA_BIN "' train --config " +
                       (box.root() / "run.yaml").string() + " --set train.steps=100000" +
                       " --set checkpoint.dir=" + (dir / "ckpt").string() +
                       " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  for (const auto& s : sets) launch += " --set " + s;
  const auto [status, log] = box.run_and_preempt_one_rank(name, launch, 3);
  ASSERT_TRUE(WIFEXITED(status)) << log;
  ASSERT_EQ(WEXITSTATUS(status), 75) << log;
  const int stopped = box.metrics_rows(name).rbegin()->first;
  std::vector<std::string> more = sets;
  more.insert(more.end(), {"train.steps=100000", "train.stop_at_step=" + std::to_string(stopped + 2)});
  const auto resumed = box.train(name, np, more, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const auto straight = box.train(name + "_ref", np, more);
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto got = box.metrics_rows(name);
  const auto want = box.metrics_rows(name + "_ref");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << name << " step " << step;
  }
}

}  // namespace hydra::test
