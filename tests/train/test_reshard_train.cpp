// Distributed checkpoints load into any layout (docs/CHECKPOINT.md "Loading into another
// layout"): a run saved after 3 steps under tp2 x dp2 ZeRO-1 (4 ranks) and resumed under
// tp1 (one process), tp4, dp4 ZeRO-2, dp2 ZeRO-0 and tp2 alone continues the uninterrupted
// run's losses (steps 4-6) within 1e-4 relative, and the tp4 run's own step-6 checkpoint
// consolidates to the uninterrupted run's weights; a single-process checkpoint resumed under
// tp2 x dp2 continues the same way; so do pipeline checkpoints (tp2 x pp2 into one process
// and pp2 x dp2, and back), and a dp2 x tp2 x pp2 run resumes under dp4, tp4, pp4, one
// process and dp2 x tp2, and back. The model has 4 heads (tp4 needs them) and one KV head,
// so CCQA's KV path is replicated under tp, and the 256-entry vocabulary is padded to 512 rows
// under tp4 (padding is not stored). Real `hydra` processes, CPU, MPI backend.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/h5_file.h"
#include "tests/train/consolidated_weights.h"
#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::HydraRun;
using hydra::test::TrainSandbox;

struct ReshardTrain : hydra::test::SandboxTest<ReshardTrain> {
  static constexpr const char* kTag = "hydra_reshard_train";
  static constexpr int kSteps = 6;

  // The sandbox model with 4 heads, plus `layout`.
  static std::vector<std::string> with(const std::vector<std::string>& layout) {
    std::vector<std::string> sets = {"model.heads=4"};
    sets.insert(sets.end(), layout.begin(), layout.end());
    return sets;
  }

  static void expect_ok(const HydraRun& run) { ASSERT_EQ(run.exit_code, 0) << run.output; }

  // Trains `name` with `sets` for 3 steps (checkpoint at step 3).
  static void train_three_steps(const std::string& name, int np, const std::vector<std::string>& sets_in) {
    auto sets = sets_in;
    sets.push_back("train.stop_at_step=3");
    expect_ok(sandbox()->train(name, np, sets));
    ASSERT_TRUE(fs::exists(root() / name / "ckpt" / "step_00000003" / "COMMIT"));
  }

  // A copy of the interrupted run `from` resumed with `sets` as `name`: its steps 4-6 equal
  // the uninterrupted run `ref` within 1e-4 relative.
  static void expect_resume_continues(const std::string& from, const std::string& ref, const std::string& name, int np,
                                      const std::vector<std::string>& sets) {
    fs::remove_all(root() / name);
    fs::copy(root() / from, root() / name, fs::copy_options::recursive);
    const HydraRun run = sandbox()->train(name, np, sets, {"--resume", "latest"});
    ASSERT_EQ(run.exit_code, 0) << name << "\n" << run.output;
    EXPECT_NE(run.output.find("step_00000003 at step 3"), std::string::npos) << run.output;
    const auto got = sandbox()->metrics_rows(name);
    const auto want = sandbox()->metrics_rows(ref);
    ASSERT_EQ(want.size(), 6u) << ref;
    ASSERT_EQ(got.size(), 6u) << name;
    for (int step = 4; step <= 6; ++step) {
      const double w = TrainSandbox::loss_of(want.at(step));
      EXPECT_NEAR(TrainSandbox::loss_of(got.at(step)), w, 1e-4 * std::abs(w)) << name << " vs " << ref << " at step " << step;
    }
    // The resumed row reports how long the load took.
    EXPECT_NE(got.at(4).find("\"ckpt_load_ms\": "), std::string::npos) << got.at(4);
  }

  // The step-6 checkpoints of two runs, consolidated, hold the same tensors within 1e-4
  // (relative L2, as the training itself agrees).
  static void expect_same_consolidated(const std::string& name, const std::string& ref) {
    hydra::test::expect_same_consolidated(root(), name, ref, "step_00000006");
  }
};

TEST_F(ReshardTrain, Tp2Dp2Zero1CheckpointResumesInEveryLayout) {
  const std::vector<std::string> saved = {"parallel.tp=2", "parallel.zero_stage=1"};  // dp = 4 / 2
  expect_ok(sandbox()->train("straight", 4, with(saved)));
  train_three_steps("split", 4, with(saved));
  expect_resume_continues("split", "straight", "into_tp1", 0, with({}));
  expect_resume_continues("split", "straight", "into_tp4", 4, with({"parallel.tp=4"}));
  expect_resume_continues("split", "straight", "into_dp4_zero2", 4,
                          with({"parallel.zero_stage=2", "train.micro_batch=1"}));
  expect_resume_continues("split", "straight", "into_dp2_zero0", 2, with({"parallel.zero_stage=0"}));
  expect_resume_continues("split", "straight", "into_tp2_dp1", 2, with({"parallel.tp=2"}));
  // The tp4 run saved step 6 itself: tp ranks 2 and 3 hold only vocabulary padding of the
  // embedding and head (256 tokens padded to 512), which they do not store.
  expect_same_consolidated("into_tp4", "straight");
}

TEST_F(ReshardTrain, OneProcessCheckpointResumesUnderTp2Dp2) {
  expect_ok(sandbox()->train("one_straight", 0, with({})));
  train_three_steps("one_split", 0, with({}));
  expect_resume_continues("one_split", "one_straight", "one_into_tp2_dp2", 4,
                          with({"parallel.tp=2", "parallel.zero_stage=1"}));
}

// Pipeline stages (2 macro-blocks, tied embeddings: the last stage holds a copy of
// embed.weight, stored once by the first stage): tp2 x pp2 resumes on one process and under
// pp2 x dp2 ZeRO-2, and a single-process checkpoint resumes under tp2 x pp2.
TEST_F(ReshardTrain, PipelineCheckpointsResumeInOtherLayoutsAndBack) {
  const std::vector<std::string> model = {"model.macro_blocks=2", "model.tie_embeddings=true"};
  auto layout = [&](const std::vector<std::string>& extra) {
    auto sets = model;
    sets.insert(sets.end(), extra.begin(), extra.end());
    return sets;
  };
  const auto tp2_pp2 = layout({"parallel.tp=2", "parallel.pp=2"});
  expect_ok(sandbox()->train("pp_straight", 4, tp2_pp2));
  train_three_steps("pp_split", 4, tp2_pp2);
  expect_resume_continues("pp_split", "pp_straight", "pp_into_one", 0, layout({}));
  expect_resume_continues("pp_split", "pp_straight", "pp_into_pp2_dp2_zero2", 4,
                          layout({"parallel.pp=2", "parallel.zero_stage=2", "train.micro_batch=1"}));
  expect_ok(sandbox()->train("pp_one_straight", 0, layout({})));
  train_three_steps("pp_one_split", 0, layout({}));
  expect_resume_continues("pp_one_split", "pp_one_straight", "pp_one_into_tp2_pp2", 4, tp2_pp2);
}

// The matrix: a dp2 x tp2 x pp2 ZeRO-1 run (8 ranks; 4 macro-blocks so that pp4 has
// a block per stage) saved after 3 steps resumes under dp4 ZeRO-2, tp4, pp4, one process and
// dp2 x tp2 ZeRO-0, each continuing the uninterrupted 3D run; and a one-process checkpoint
// resumes under dp2 x tp2 x pp2.
TEST_F(ReshardTrain, ThreeDimensionalCheckpointResumesInEveryLayoutAndBack) {
  const std::vector<std::string> model = {"model.heads=4", "model.macro_blocks=4", "model.tie_embeddings=true"};
  auto layout = [&](const std::vector<std::string>& extra) {
    auto sets = model;
    sets.insert(sets.end(), extra.begin(), extra.end());
    return sets;
  };
  const auto three_d = layout({"parallel.dp=2", "parallel.tp=2", "parallel.pp=2", "parallel.zero_stage=1"});
  expect_ok(sandbox()->train("3d_straight", 8, three_d));
  train_three_steps("3d_split", 8, three_d);
  expect_resume_continues("3d_split", "3d_straight", "3d_into_dp4_zero2", 4,
                          layout({"parallel.zero_stage=2", "train.micro_batch=1"}));
  expect_resume_continues("3d_split", "3d_straight", "3d_into_tp4", 4, layout({"parallel.tp=4"}));
  expect_resume_continues("3d_split", "3d_straight", "3d_into_pp4", 4, layout({"parallel.pp=4", "train.micro_batch=1"}));
  expect_resume_continues("3d_split", "3d_straight", "3d_into_one", 0, layout({}));
  expect_resume_continues("3d_split", "3d_straight", "3d_into_dp2_tp2_zero0", 4,
                          layout({"parallel.tp=2", "parallel.zero_stage=0"}));
  expect_ok(sandbox()->train("3d_one_straight", 0, layout({})));
  train_three_steps("3d_one_split", 0, layout({}));
  expect_resume_continues("3d_one_split", "3d_one_straight", "3d_one_into_3d", 8, three_d);
}

// A checkpoint missing a rank file that holds parts a rank needs is refused on every rank
// (exit 3), naming the file, rather than loaded with holes.
TEST_F(ReshardTrain, MissingRankFileIsRefusedUnderAnotherLayout) {
  train_three_steps("holes", 2, with({"parallel.tp=2"}));
  fs::remove(root() / "holes" / "ckpt" / "step_00000003" / "rank_00001.h5");
  const HydraRun run = sandbox()->train("holes", 0, with({}), {"--resume", (root() / "holes" / "ckpt" / "step_00000003").string()});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  EXPECT_NE(run.output.find("rank_00001.h5"), std::string::npos) << run.output;
}

}  // namespace
