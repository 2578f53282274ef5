// `hydra bench step` runs the training step of a run: after its warm-up and timed steps the
// loss is the one `hydra train` logs at that step (same seed, data and schedule); it writes
// no checkpoint and no metrics file; its figures agree with each other; bad options exit 2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;

// The number after "key": (ours: numbers unquoted).
double number_of(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) ADD_FAILURE() << key << " not in " << json;
  return at == std::string::npos ? NAN : std::stod(json.substr(at + key.size() + 3));
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(BenchStep, RunsTheTrainingStepAndWritesNothingOfARun) {
  const hydra::test::TrainSandbox box("hydra_bench_step", 3);
  ASSERT_EQ(box.prepare_run().exit_code, 0) << box.prepare_run().output;
  const auto train = box.train("run", 0);
  ASSERT_EQ(train.exit_code, 0) << train.output;

  const fs::path json = box.root() / "bench.json";
  const auto bench = hydra::test::run_hydra(
      {"bench", "step", "--config", (box.root() / "run.yaml").string(), "--set",
       "checkpoint.dir=" + (box.root() / "bench_ckpt").string(), "--set",
       "log.jsonl=" + (box.root() / "bench_metrics.jsonl").string(), "--warmup", "1", "--steps", "2", "--json",
       json.string()},
      (box.root() / "bench.log").string());
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("bench step: "), std::string::npos) << bench.output;
  EXPECT_FALSE(fs::exists(box.root() / "bench_ckpt")) << "a benchmark saves no checkpoint";
  EXPECT_FALSE(fs::exists(box.root() / "bench_metrics.jsonl")) << "a benchmark writes no metrics file";

  const std::string out = read_file(json);
  // 1 warm-up + 2 timed steps = the run's step 3, bit for bit (the JSON and the metrics file
  // both print floats that parse back to the same bits).
  EXPECT_EQ(number_of(out, "last_loss"), hydra::test::TrainSandbox::loss_of(box.metrics_rows("run").at(3))) << out;
  EXPECT_EQ(number_of(out, "steps"), 2);
  EXPECT_EQ(number_of(out, "warmup_steps"), 1);
  EXPECT_EQ(number_of(out, "micro_batch"), 2);   // kSmallRunConfig: global_batch 4, micro_batch 2
  EXPECT_EQ(number_of(out, "accumulation"), 2);
  const double step_ms = number_of(out, "step_ms");
  EXPECT_GT(step_ms, 0);
  EXPECT_NEAR(number_of(out, "tok_s"), 4 * 32 / (step_ms / 1e3), 1e-6 * number_of(out, "tok_s"));
  // The phases cover the step: forward, backward (two micro-batches each) and the optimizer.
  const double phases = number_of(out, "forward") + number_of(out, "backward") +
                        number_of(out, "gradient reduction and optimizer step") + number_of(out, "step start");
  const double device_step_ms = number_of(out, "device_step_ms");
  EXPECT_LE(phases, device_step_ms * 1.0001) << out;
  EXPECT_GE(phases, device_step_ms * 0.9) << out;  // the rest: between steps, in the bench loop
  EXPECT_GT(number_of(out, "forward"), 0);
  EXPECT_GT(number_of(out, "backward"), 0);
}

TEST(BenchStep, BadOptionsExit2NamingThem) {
  const hydra::test::TrainSandbox box("hydra_bench_step_bad", 3);
  ASSERT_EQ(box.prepare_run().exit_code, 0) << box.prepare_run().output;
  const std::string config = (box.root() / "run.yaml").string();
  const auto zero = hydra::test::run_hydra({"bench", "step", "--config", config, "--steps", "0"},
                                           (box.root() / "zero.log").string());
  EXPECT_EQ(zero.exit_code, 2) << zero.output;
  EXPECT_NE(zero.output.find("--steps needs a whole number of at least 1, got '0'"), std::string::npos) << zero.output;
  const auto word = hydra::test::run_hydra({"bench", "step", "--config", config, "--warmup", "two"},
                                           (box.root() / "word.log").string());
  EXPECT_EQ(word.exit_code, 2) << word.output;
  EXPECT_NE(word.output.find("--warmup needs a whole number of at least 0, got 'two'"), std::string::npos)
      << word.output;
  const auto no_config = hydra::test::run_hydra({"bench", "step"}, (box.root() / "none.log").string());
  EXPECT_EQ(no_config.exit_code, 2) << no_config.output;
  EXPECT_NE(no_config.output.find("needs --config FILE"), std::string::npos) << no_config.output;
#ifndef HYDRA_CUDA
  const auto trace = hydra::test::run_hydra({"bench", "step", "--config", config, "--trace", "t.json"},
                                            (box.root() / "trace.log").string());
  EXPECT_EQ(trace.exit_code, 2) << trace.output;
  EXPECT_NE(trace.output.find("--trace needs the CUDA build"), std::string::npos) << trace.output;
#endif
}

}  // namespace
