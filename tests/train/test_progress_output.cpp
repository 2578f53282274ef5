// What a user sees of a run as it goes: `mpirun -np 2 hydra train` with its output piped to a
// file prints the first step's progress line (steps, tok/s, ETA and the first step's time) at
// once, while the run is still going, whatever log.every is.
#include <sys/wait.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/train/train_sandbox.h"

namespace {

struct ProgressOutput : hydra::test::SandboxTest<ProgressOutput> {
  static constexpr const char* kTag = "hydra_progress_output";
  static constexpr int kSteps = 100000;
};

TEST_F(ProgressOutput, FirstStepLineReachesAPipeUnderMpirunWhileTheRunGoes) {
  const auto dir = root() / "first_line";
  const std::string out = (dir / "out.log").string();
  const std::string launch = hydra::test::TrainSandbox::mpirun_prefix(2) + " '" HYDRA_BIN "' train --config " +
                             (root() / "run.yaml").string() + " --set log.every=1000" +
                             " --set checkpoint.dir=" + (dir / "ckpt").string() +
                             " --set log.jsonl=" + (dir / "metrics.jsonl").string();
  // Once the first line is in the file (or 10 s passed), copy the file as it is then, and ask
  // the run to stop (SIGUSR1 to mpirun: every rank saves and exits 75).
  const std::string look = "for i in $(seq 200); do grep -q '^\\[.*\\] \\[rank 0/2\\] \\[info\\] step 1/' " + out +
                           " && break; sleep 0.05; done; cp " + out + " " + (dir / "seen.log").string() +
                           "; kill -USR1 $pid";
  const auto [status, log] = sandbox()->run_and_signal("first_line", launch, 1, look, "pkill -9 -f '" + (dir / "ckpt").string() + "'");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 75) << "the run was still going when its first line arrived\n" << log;
  std::ifstream in(dir / "seen.log");
  std::string line;
  bool seen = false;
  while (!seen && std::getline(in, line)) seen = line.find("step 1/100000 |") != std::string::npos;
  ASSERT_TRUE(seen) << "no first-step line in the pipe while the run went on; the output then:\n" << log;
  EXPECT_NE(line.find(" tok/s"), std::string::npos) << line;
  EXPECT_NE(line.find(" | ETA "), std::string::npos) << line;
  EXPECT_NE(line.find(" | first step "), std::string::npos) << line;
}

}  // namespace
