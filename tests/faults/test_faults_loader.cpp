// The fault matrix, data path from shards to batches: batch sizes that do not split, and
// validation data too small for the run's batches. Each case runs the real `hydra train` on
// the sandbox corpus and asserts the exit code, the message (naming the directory, key and
// value) and what is left on disk.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;

struct FaultsLoader : hydra::test::SandboxTest<FaultsLoader> {
  static constexpr const char* kTag = "hydra_faults_loader";
  static constexpr int kSteps = 1;

  static void expect_contains(const std::string& output, const std::string& piece) {
    EXPECT_NE(output.find(piece), std::string::npos) << "missing '" << piece << "' in:\n" << output;
  }
  // A run refused at start leaves neither a checkpoint nor a metrics file. (checkpoint.dir
  // itself may exist, empty: the start-up probe of train/run_checks.h creates it to prove it
  // writable before the data is read.)
  static void expect_nothing_written(const std::string& name) {
    const fs::path ckpt = root() / name / "ckpt";
    EXPECT_TRUE(!fs::exists(ckpt) || fs::is_empty(ckpt)) << name;
    EXPECT_FALSE(fs::exists(root() / name / "metrics.jsonl")) << name;
  }
};

// Micro-batches of 3 cannot split the 4 sequences of a step (one process, dp 1): exit 2 at
// start, naming the key and value.
TEST_F(FaultsLoader, MicroBatchThatDoesNotDivideTheStep) {
  const auto run = sandbox()->train("micro3", 0, {"train.micro_batch=3"});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  expect_contains(run.output, "train.micro_batch 3 must divide the 4 sequences");
  expect_nothing_written("micro3");
}

// The sandbox's val split holds ~110 windows of 33 bytes; a global batch of 128 cannot be
// evaluated once. Refused at start (exit 3), not at the first evaluation.
TEST_F(FaultsLoader, ValSplitSmallerThanOneGlobalBatch) {
  const auto run = sandbox()->train("val_small", 0, {"train.global_batch=128"});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  expect_contains(run.output, (root() / "tokens").string());
  expect_contains(run.output, "train.global_batch 128");
  expect_contains(run.output, "--val-fraction");
  expect_nothing_written("val_small");
}

// Data prepared without a validation split (--val-fraction 0).
TEST_F(FaultsLoader, EmptyValSplit) {
  const fs::path tokens = root() / "tokens_no_val";
  const auto prepare = hydra::test::run_hydra({"data", "prepare", "--input", (root() / "text").string(), "--output",
                                               tokens.string(), "--tokenizer", "bytes", "--val-fraction", "0"},
                                              (root() / "prepare_no_val.log").string());
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  const auto run = sandbox()->train("val_empty", 0, {"data.path=" + tokens.string()});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  expect_contains(run.output, tokens.string());
  expect_contains(run.output, "holds 0 windows");
  expect_nothing_written("val_empty");
}

// More validation batches than the val split holds: a warning at start naming the key, then
// every whole batch evaluated once (no window repeated), exit 0.
TEST_F(FaultsLoader, EvalBatchesBeyondTheValSplit) {
  const auto run = sandbox()->train("val_capped", 0, {"train.eval_batches=1000"});
  EXPECT_EQ(run.exit_code, 0) << run.output;
  expect_contains(run.output, "train.eval_batches 1000");
  expect_contains(run.output, "evaluating ");
  EXPECT_TRUE(fs::exists(root() / "val_capped" / "metrics.jsonl"));
}

}  // namespace
