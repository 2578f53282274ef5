// `hydra eval --json`: one JSON object with the checkpoint's position and the loss at full
// precision, checked against the training run that wrote the checkpoint (its final
// evaluation scores the same weights on the same batches, and its metrics row is written with
// round-trip precision).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/train/train_sandbox.h"

namespace {

// The number after "key": in a JSON line (ours: no nesting, numbers unquoted).
double number_of(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) ADD_FAILURE() << key << " not in " << json;
  return at == std::string::npos ? NAN : std::stod(json.substr(at + key.size() + 3));
}

TEST(EvalJson, FullPrecisionWithTheCheckpointsPosition) {
  const hydra::test::TrainSandbox box("hydra_eval_json", 2);
  ASSERT_EQ(box.prepare_run().exit_code, 0) << box.prepare_run().output;
  const auto train = box.train("run", 0);
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string ckpt = (box.root() / "run" / "ckpt" / "step_00000002").string();

  const auto eval = hydra::test::run_hydra(
      {"eval", "--config", (box.root() / "run.yaml").string(), "--checkpoint", ckpt, "--json"},
      (box.root() / "eval.log").string());
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const size_t from = eval.output.rfind("\n{");  // the object, after the log lines
  ASSERT_NE(from, std::string::npos) << eval.output;
  const std::string json = eval.output.substr(from + 1);

  const std::string last_row = box.metrics_rows("run").rbegin()->second;
  const double trained_val_loss = number_of(last_row, "val_loss");
  EXPECT_EQ(number_of(json, "val_loss"), trained_val_loss) << json << " vs " << last_row;
  EXPECT_EQ(number_of(json, "perplexity"), std::exp(number_of(json, "val_loss")));
  EXPECT_EQ(number_of(json, "step"), 2);
  EXPECT_EQ(number_of(json, "tokens"), 2 * 4 * 32);  // steps x global_batch x seq_len (kSmallRunConfig)
  EXPECT_EQ(number_of(json, "eval_batches"), 2);
  EXPECT_NE(json.find("\"checkpoint\": \"" + ckpt + "\""), std::string::npos) << json;
}

}  // namespace
