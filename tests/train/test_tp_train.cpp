// Tensor parallelism end to end: `mpirun -np 2 hydra train --set parallel.tp=2` trains what
// one process trains (the sandbox model: MQA, CCQA with one KV head, i.e. the replicated-KV
// path, MLA; MoD and MoR on), tied and untied, and with CCQA's `heads` layout. Compared: the per-step losses of the metrics
// file and the global gradient norms (split parameters summed over tp, replicated ones once),
// within 1e-4 relative, with clipping active (train.clip below the norms). Also tp2 x dp2
// with ZeRO 1 on 4 ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;

struct TpTrain : hydra::test::SandboxTest<TpTrain> {
  static constexpr const char* kTag = "hydra_tp_train";
  static constexpr int kSteps = 5;

  // `np` ranks with `layout` settings against one process, same global batch and `model` settings.
  static void expect_equals_one_process(const std::string& tag, bool tied, int np, const std::vector<std::string>& layout,
                                        const std::vector<std::string>& model = {}) {
    // clip 0.5 is below this model's gradient norms: clipping (and so the norm) matters.
    std::vector<std::string> sets = {"train.clip=0.5", std::string("model.tie_embeddings=") + (tied ? "true" : "false")};
    sets.insert(sets.end(), model.begin(), model.end());
    const auto one = sandbox()->train(tag + "_ref", 0, sets);
    ASSERT_EQ(one.exit_code, 0) << one.output;
    std::vector<std::string> par_sets = sets;
    par_sets.insert(par_sets.end(), layout.begin(), layout.end());
    const auto par = sandbox()->train(tag, np, par_sets);
    ASSERT_EQ(par.exit_code, 0) << par.output;
    const auto want = sandbox()->loss_and_grad_norm(tag + "_ref");
    const auto got = sandbox()->loss_and_grad_norm(tag);
    ASSERT_EQ(want.size(), 5u);
    ASSERT_EQ(got.size(), 5u);
    for (const auto& [step, v] : want) {
      EXPECT_NEAR(got.at(step).first, v.first, 1e-4 * std::abs(v.first)) << tag << " loss at step " << step;
      EXPECT_NEAR(got.at(step).second, v.second, 1e-4 * std::abs(v.second)) << tag << " grad_norm at step " << step;
    }
    EXPECT_GT(want.begin()->second.second, 0.5) << "the reference must clip for the test to mean something";
  }
};

TEST_F(TpTrain, UntiedTp2EqualsOneProcess) { expect_equals_one_process("untied_tp2", false, 2, {"parallel.tp=2"}); }
TEST_F(TpTrain, TiedTp2EqualsOneProcess) { expect_equals_one_process("tied_tp2", true, 2, {"parallel.tp=2"}); }
// The MLP recomputed in backward (train.activation_checkpointing: mlp) inside the tp region:
// its row-parallel all-reduce runs again in the recompute, against one process without it.
TEST_F(TpTrain, Tp2RecomputedMlpEqualsOneProcess) {
  expect_equals_one_process("tp2_mlp", false, 2, {"parallel.tp=2", "train.activation_checkpointing=mlp"});
}
// CCQA's `heads` layout: 4 heads compressed by 2 into 2 query heads (one per rank) and
// ceil(1 / 2) = 1 key/value head of the full head size 8, replicated over tp.
TEST_F(TpTrain, Tp2CompressedHeadsEqualsOneProcess) {
  expect_equals_one_process("tp2_ccqa_heads", false, 2, {"parallel.tp=2"},
                            {"model.heads=4", "model.ccqa.compression=2", "model.ccqa.compress=heads"});
}
TEST_F(TpTrain, Tp2Dp2Zero1EqualsOneProcess) {
  expect_equals_one_process("tp2_dp2_zero1", false, 4, {"parallel.tp=2", "parallel.zero_stage=1"});
}

// A tp2 run stopped at step 2 and resumed with tp2 continues bit for bit. (Loading into
// another tp size and consolidating tp slices: tests/train/test_reshard_train.cpp and
// tests/checkpoint/test_checkpoint_train.cpp.)
TEST_F(TpTrain, Tp2ResumesExactly) {
  const std::vector<std::string> tp2 = {"parallel.tp=2"};
  ASSERT_EQ(sandbox()->train("tp2_straight", 2, tp2).exit_code, 0);
  std::vector<std::string> stop = tp2;
  stop.push_back("train.stop_at_step=2");
  ASSERT_EQ(sandbox()->train("tp2_split", 2, stop).exit_code, 0);
  const auto resumed = sandbox()->train("tp2_split", 2, tp2, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const auto want = sandbox()->metrics_rows("tp2_straight");
  const auto got = sandbox()->metrics_rows("tp2_split");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, row] : want) {
    EXPECT_EQ(hydra::test::TrainSandbox::training_fields(got.at(step)), hydra::test::TrainSandbox::training_fields(row))
        << "step " << step;
  }
}

// Under tp each rank reads only the files that hold its slices (the index's catalog says
// which): damage rank 1's file of the newest checkpoint and rank 0 alone could load it. The
// ranks must agree and both fall back.
TEST_F(TpTrain, RanksAgreeToSkipACheckpointOnlyOneOfThemCannotRead) {
  const std::vector<std::string> sets = {"parallel.tp=2", "checkpoint.every=2", "checkpoint.keep=5"};
  ASSERT_EQ(sandbox()->train("tp2_damaged", 2, sets).exit_code, 0);
  const fs::path newest = sandbox()->root() / "tp2_damaged" / "ckpt" / "step_00000004";
  hydra::test::TrainSandbox::damage(newest / "rank_00001.h5");
  fs::remove_all(sandbox()->root() / "tp2_damaged" / "ckpt" / "step_00000005");
  const auto resumed = sandbox()->train("tp2_damaged", 2, {"parallel.tp=2"}, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("step_00000002 at step 2"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("could not be read on another rank"), std::string::npos) << resumed.output;
}

}  // namespace
