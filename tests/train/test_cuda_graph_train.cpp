// Whole-step CUDA graphs (train.cuda_graphs, train/step_graph.h) against the eager step, on one
// GPU in bf16 (CUDA build, label gpu). The sandbox model (MQA, CCQA on the fused kernels, MLA;
// MoD and MoR on; clipping active) trains 20 steps with an evaluation every 5 between replays.
// Where the eager step is deterministic (two eager runs agree to the bit) the captured run
// must agree to the bit too; otherwise within bf16 tolerance. A run stopped between replays
// and resumed (eager again, then captured anew) continues as the uninterrupted captured run.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

using Sets = std::vector<std::string>;
using hydra::test::TrainSandbox;

struct CudaGraphTrain : hydra::test::SandboxTest<CudaGraphTrain> {
  static constexpr const char* kTag = "hydra_cuda_graph_train";
  static constexpr int kSteps = 20;

  static Sets sets(const std::string& graphs) {
    return {"train.device=cuda", "train.dtype=bf16", "train.clip=0.5", "train.eval_every=5",
            "train.cuda_graphs=" + graphs};
  }

  // step -> the row's training fields and val_loss, as written.
  static std::map<int, std::string> rows(const std::string& name) {
    std::map<int, std::string> out;
    for (const auto& [step, row] : sandbox()->metrics_rows(name)) {
      const size_t val = row.find("\"val_loss\"");
      const std::string val_loss = val == std::string::npos ? "" : row.substr(val, row.find_first_of(",}", val) - val);
      out[step] = TrainSandbox::training_fields(row) + val_loss;
    }
    return out;
  }

  // Bitwise where `exact`, else loss and gradient norm within bf16 tolerance, at steps from..to.
  static void expect_same_steps(const std::string& want_run, const std::string& got_run, bool exact, int from = 1,
                                int to = kSteps) {
    const auto want = rows(want_run), got = rows(got_run);
    const auto want_numbers = sandbox()->loss_and_grad_norm(want_run), got_numbers = sandbox()->loss_and_grad_norm(got_run);
    for (int step = from; step <= to; ++step) {
      ASSERT_TRUE(want.count(step) && got.count(step)) << "step " << step;
      if (exact) {
        EXPECT_EQ(got.at(step), want.at(step)) << got_run << " against " << want_run << ", step " << step;
        continue;
      }
      const auto [loss, norm] = want_numbers.at(step);
      EXPECT_NEAR(got_numbers.at(step).first, loss, 2e-2 * std::abs(loss)) << got_run << ", step " << step;
      EXPECT_NEAR(got_numbers.at(step).second, norm, 5e-2 * std::abs(norm)) << got_run << ", step " << step;
    }
  }
};

TEST_F(CudaGraphTrain, CapturedStepEqualsTheEagerStep) {
  const auto eager = sandbox()->train("eager", 0, sets("off"));
  ASSERT_EQ(eager.exit_code, 0) << eager.output;
  EXPECT_EQ(eager.output.find("captured"), std::string::npos) << eager.output;
  const auto again = sandbox()->train("eager_again", 0, sets("off"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const bool deterministic = rows("eager") == rows("eager_again");
  const auto graph = sandbox()->train("graph", 0, sets("on"));
  ASSERT_EQ(graph.exit_code, 0) << graph.output;
  EXPECT_NE(graph.output.find("cuda graphs: the training step captured"), std::string::npos) << graph.output;
  ASSERT_EQ(rows("graph").size(), static_cast<size_t>(kSteps));
  expect_same_steps("eager", "graph", deterministic);
  const auto numbers = sandbox()->loss_and_grad_norm("graph");
  EXPECT_LT(numbers.at(kSteps).first, numbers.at(1).first) << "the captured run does not learn";
  if (!deterministic) std::printf("note: the eager step is not bitwise deterministic; compared within tolerance\n");

  // Stopped at step 10 (a checkpoint written between replays), resumed: two eager steps, a
  // new capture, the same steps 11..20.
  Sets stopped = sets("on");
  stopped.push_back("train.stop_at_step=10");
  const auto first = sandbox()->train("resumed", 0, stopped);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto second = sandbox()->train("resumed", 0, sets("on"), {"--resume", "latest"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  expect_same_steps("graph", "resumed", deterministic, 11);
}

// With activation checkpointing the recompute (a forward and a backward inside the backward) is
// captured with the step: every mode's captured run must train as its eager run does, to the
// bit where two eager runs agree to the bit (on an H100 on 2026-12-07 all of them did). Against
// the run without recompute only up to step 12: recomputed runs differ from it in the last bits
// from step 1 (their gradients come through the recompute's own backward), and the sandbox's
// loss spikes at steps 14-15, where differences of that size send runs apart (gradient norm 7.9
// without recompute, 3.1 with `mlp`, eager or captured alike). Read as a capture fault on
// 2026-12-05, that spike kept recompute out of the graph until this test was run with it
// allowed (docs/PERF.md, session 35).
TEST_F(CudaGraphTrain, CapturedRecomputeEqualsTheEagerRecompute) {
  constexpr int kBeforeTheSpike = 12;
  const auto plain = sandbox()->train("plain", 0, sets("off"));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  for (const std::string mode : {"mlp", "layer", "block"}) {
    Sets eager_sets = sets("off"), graph_sets = sets("on");
    eager_sets.push_back("train.activation_checkpointing=" + mode);
    graph_sets.push_back("train.activation_checkpointing=" + mode);
    const auto eager = sandbox()->train("eager_" + mode, 0, eager_sets);
    ASSERT_EQ(eager.exit_code, 0) << eager.output;
    const auto again = sandbox()->train("eager_again_" + mode, 0, eager_sets);
    ASSERT_EQ(again.exit_code, 0) << again.output;
    const bool deterministic = rows("eager_" + mode) == rows("eager_again_" + mode);
    const auto graph = sandbox()->train("graph_" + mode, 0, graph_sets);
    ASSERT_EQ(graph.exit_code, 0) << mode << ": " << graph.output;
    EXPECT_NE(graph.output.find("cuda graphs: the training step captured"), std::string::npos) << graph.output;
    ASSERT_EQ(rows("graph_" + mode).size(), static_cast<size_t>(kSteps)) << mode;
    expect_same_steps("eager_" + mode, "graph_" + mode, deterministic);
    expect_same_steps("plain", "graph_" + mode, false, 1, kBeforeTheSpike);
    if (!deterministic) {
      std::printf("note: %s's eager step is not bitwise deterministic; compared within tolerance\n", mode.c_str());
    }
  }
}

}  // namespace
