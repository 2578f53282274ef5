// train.freeze and --init-from through `hydra train`, one process, as a user runs a fine-tune:
// frozen tensors keep their values bit for bit, are saved (without optimizer state) and
// resume exactly; a pattern that matches nothing, or freezing everything, is refused at start;
// --init-from starts a new run at step 0 (schedule, data position, AdamW's step count).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "tests/train/freeze_checks.h"
#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::run_hydra;
using hydra::test::TrainSandbox;

struct FreezeTrain : hydra::test::SandboxTest<FreezeTrain> {
  static constexpr const char* kTag = "hydra_freeze_train";
  static constexpr int kSteps = 6;

  // The embedding, the first layer and every MLP norm (a pattern that starts with * is quoted
  // in YAML, where * begins an alias).
  static std::vector<std::string> patterns() { return {"embed.*", "blocks.0.layers.0.*", "*.mlp_norm.weight"}; }
  static std::string freeze_set() { return "train.freeze=[embed.*, blocks.0.layers.0.*, '*.mlp_norm.weight']"; }

  static std::string step_dir(const std::string& run, int step) {
    return (root() / run / "ckpt" / hydra::checkpoint::step_dir_name(step)).string();
  }

  static std::string consolidate(const std::string& run, int step) {
    const std::string out = (root() / run / "weights.h5").string();
    const auto joined = run_hydra({"ckpt", "consolidate", step_dir(run, step), "--output", out}, out + ".log");
    EXPECT_EQ(joined.exit_code, 0) << joined.output;
    return out;
  }

  // The number after "key": in a metrics row.
  static double field(const std::string& row, const std::string& key) {
    const size_t at = row.find("\"" + key + "\": ");
    EXPECT_NE(at, std::string::npos) << key << " not in " << row;
    return at == std::string::npos ? -1 : std::stod(row.substr(at + key.size() + 4));
  }
};

TEST_F(FreezeTrain, FrozenTensorsKeepTheirValuesBitForBitAndAreSavedWithoutOptimizerState) {
  ASSERT_EQ(sandbox()->train("base", 0).exit_code, 0);
  const auto tuned = sandbox()->train("tuned", 0, {freeze_set()}, {"--init-from", step_dir("base", kSteps)});
  ASSERT_EQ(tuned.exit_code, 0) << tuned.output;
  EXPECT_NE(tuned.output.find("frozen"), std::string::npos) << tuned.output;

  const std::string source = consolidate("base", kSteps), result = consolidate("tuned", kSteps);
  const int frozen_tensors = hydra::test::expect_frozen_unchanged(result, source, patterns());
  EXPECT_GT(frozen_tensors, 1 + 4 + 4) << "embed.weight, layer 0's tensors, the 4 MLP norms";

  // Saved as weights, without optimizer state; the trainable ones have both.
  const auto rank_file = hydra::checkpoint::H5File::open_read(step_dir("tuned", kSteps) + "/rank_00000.h5");
  EXPECT_TRUE(rank_file.exists("/model/embed.weight"));
  EXPECT_TRUE(rank_file.exists("/model/blocks.0.layers.0.attn.wq.weight"));
  const auto with_state = rank_file.list("/optim/master");
  for (const auto& name : with_state) EXPECT_FALSE(hydra::test::frozen_by(patterns(), name)) << name;
  EXPECT_EQ(with_state.size() + frozen_tensors, rank_file.list("/model").size());

  // The first row says how many parameters train and how many are frozen.
  const auto weights = hydra::checkpoint::H5File::open_read(result);
  double total = 0, frozen = 0;
  for (const auto& n : weights.list("/model")) {
    const double numel = static_cast<double>(weights.read_tensor("/model/" + n).numel());
    total += numel;
    if (hydra::test::frozen_by(patterns(), n)) frozen += numel;
  }
  const std::string first = sandbox()->metrics_rows("tuned").at(1);
  EXPECT_EQ(field(first, "params_frozen"), frozen) << first;
  EXPECT_EQ(field(first, "params_trainable"), total - frozen) << first;
  EXPECT_EQ(sandbox()->metrics_rows("tuned").at(2).find("params_frozen"), std::string::npos);
}

TEST_F(FreezeTrain, FrozenRunResumesBitForBitAndRefusesAnotherFreeze) {
  ASSERT_EQ(sandbox()->train("straight", 0, {freeze_set()}).exit_code, 0);
  ASSERT_EQ(sandbox()->train("split", 0, {freeze_set(), "train.stop_at_step=2"}).exit_code, 0);
  const auto resumed = sandbox()->train("split", 0, {freeze_set()}, {"--resume", "latest"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const auto want = sandbox()->metrics_rows("straight");
  const auto got = sandbox()->metrics_rows("split");
  ASSERT_EQ(want.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(got.size(), static_cast<size_t>(kSteps));
  for (const auto& [step, row] : want) {
    EXPECT_EQ(TrainSandbox::training_fields(got.at(step)), TrainSandbox::training_fields(row)) << "step " << step;
  }
  // The checkpoint holds no optimizer state for what was frozen: another freeze may not resume it.
  const auto changed = sandbox()->train("split", 0, {"train.freeze=[embed.*]"}, {"--resume", "latest"});
  EXPECT_EQ(changed.exit_code, 2) << changed.output;
  EXPECT_NE(changed.output.find("train.freeze"), std::string::npos) << changed.output;
}

TEST_F(FreezeTrain, APatternThatMatchesNothingOrFreezingEverythingIsRefusedAtStart) {
  auto run = sandbox()->train("typo", 0, {"train.freeze=[embed.*, blocks.*.atn.*]"});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("train.freeze: pattern 'blocks.*.atn.*' matches no parameter"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("run.yaml"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(root() / "typo" / "metrics.jsonl")) << "refused before the first step";

  run = sandbox()->train("everything", 0, {"train.freeze=[embed.*, '*']"});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("nothing would train"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(root() / "everything" / "metrics.jsonl"));
}

// --init-from is a new run: step 1 again, the warmup and the cosine over its own train.steps,
// the corpus from its first sample, a fresh AdamW (step count from 0).
TEST_F(FreezeTrain, InitFromStartsANewScheduleAtStepZero) {
  ASSERT_EQ(sandbox()->train("pre", 0).exit_code, 0);
  const auto tuned = sandbox()->train("post", 0, {}, {"--init-from", step_dir("pre", kSteps)});
  ASSERT_EQ(tuned.exit_code, 0) << tuned.output;
  const auto pre = sandbox()->metrics_rows("pre");
  const auto post = sandbox()->metrics_rows("post");
  ASSERT_EQ(post.size(), static_cast<size_t>(kSteps));
  for (const auto& [step, row] : pre) {
    EXPECT_EQ(field(post.at(step), "lr"), field(row, "lr")) << "step " << step;
    EXPECT_EQ(field(post.at(step), "tokens"), field(row, "tokens")) << "step " << step;
  }
  EXPECT_LT(field(post.at(1), "loss"), field(pre.at(1), "loss") - 0.3) << "starts from the trained weights";
  EXPECT_FALSE(fs::exists(step_dir("post", 2 * kSteps)));
  const auto index = hydra::checkpoint::read_index(step_dir("post", kSteps));
  EXPECT_EQ(index.progress.step, kSteps);
  EXPECT_EQ(index.progress.consumed_samples, 4 * kSteps) << "global batch 4 from sample 0";
  EXPECT_EQ(index.optim_step, kSteps) << "AdamW's bias corrections restart";

  // The same start from the consolidated file of that checkpoint: the same losses, bit for bit.
  const auto from_file = sandbox()->train("post_file", 0, {}, {"--init-from", consolidate("pre", kSteps)});
  ASSERT_EQ(from_file.exit_code, 0) << from_file.output;
  const auto file_rows = sandbox()->metrics_rows("post_file");
  ASSERT_EQ(file_rows.size(), post.size());
  for (const auto& [step, row] : post) EXPECT_EQ(field(file_rows.at(step), "loss"), field(row, "loss")) << "step " << step;
}

// Nothing in a checkpoint depends on train.seq_len (RoPE is computed): a fine-tune at a longer
// and a shorter length than pretraining loads and trains, starting well below a fresh model.
TEST_F(FreezeTrain, InitFromAtALongerAndAShorterSeqLen) {
  ASSERT_EQ(sandbox()->train("short_pre", 0).exit_code, 0);  // seq_len 32
  const double fresh = field(sandbox()->metrics_rows("short_pre").at(1), "loss");
  for (const int seq_len : {64, 16}) {
    const std::string name = "seq" + std::to_string(seq_len);
    const auto run = sandbox()->train(name, 0, {"train.seq_len=" + std::to_string(seq_len), "train.steps=2"},
                                      {"--init-from", step_dir("short_pre", kSteps)});
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const auto rows = sandbox()->metrics_rows(name);
    ASSERT_EQ(rows.size(), 2u) << name;
    EXPECT_EQ(field(rows.at(1), "tokens"), 4.0 * seq_len) << name;
    EXPECT_LT(field(rows.at(1), "loss"), fresh - 0.3) << name << " starts from the trained weights";
  }
}

}  // namespace
