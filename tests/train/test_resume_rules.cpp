// train/resume_rules.h: which keys a resumed run may change, against configs written by hand
// in the JSON shape the checkpoint stores, and the docs' list against the table.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "common/errors.h"
#include "train/resume_rules.h"

namespace {

using hydra::train::check_resume_config;
using hydra::train::resume_rule;

// A config in the checkpoint's JSON shape, with one value replaced.
std::string config(const std::string& from = "", const std::string& to = "") {
  std::string text = R"({
  "model": {"dim": 32, "pattern": ["mqa", "ccqa"], "ccqa": {"compression": 4, "kernel": "reference"}},
  "parallel": {"dp": 0, "tp": 1, "pp_layers": []},
  "train": {"steps": 6, "seed": 1234, "lr": 0.01, "micro_batch": 2, "seq_len": 32},
  "data": {"path": "/data/tokens", "tokenizer": "bytes"},
  "checkpoint": {"dir": "ckpt", "keep": 3},
  "log": {"every": 10, "jsonl": ""}
})";
  if (!from.empty()) text.replace(text.find(from), from.size(), to);
  return text;
}

std::string refusal(const std::string& stored, const std::string& current) {
  try {
    check_resume_config(stored, current, "/run/ckpt/step_00000004");
  } catch (const hydra::common::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ResumeRules, SameConfigIsAccepted) { EXPECT_EQ(refusal(config(), config()), ""); }

TEST(ResumeRules, ChangeableKeysAreAccepted) {
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"steps\": 6", "\"steps\": 60"},
           {"\"micro_batch\": 2", "\"micro_batch\": 1"},
           {"\"dp\": 0", "\"dp\": 2"},
           {"\"pp_layers\": []", "\"pp_layers\": [1, 1]"},
           {"\"kernel\": \"reference\"", "\"kernel\": \"fused\""},
           {"\"keep\": 3", "\"keep\": 5"},
           {"\"every\": 10", "\"every\": 1"}}) {
    EXPECT_EQ(refusal(config(), config(from, to)), "") << from << " -> " << to;
  }
}

TEST(ResumeRules, FixedKeysAreRefusedWithBothValues) {
  const std::string message = refusal(config(), config("\"seed\": 1234", "\"seed\": 7"));
  EXPECT_NE(message.find("train.seed: 1234 in the checkpoint, 7 now"), std::string::npos) << message;
  EXPECT_NE(message.find("/run/ckpt/step_00000004"), std::string::npos) << message;
  for (const auto& [from, to, key] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"\"dim\": 32", "\"dim\": 64", "model.dim: 32 in the checkpoint, 64 now"},
           {"[\"mqa\", \"ccqa\"]", "[\"ccqa\", \"mqa\"]", "model.pattern: [mqa, ccqa] in the checkpoint, [ccqa, mqa] now"},
           {"\"compression\": 4", "\"compression\": 2", "model.ccqa.compression: 4"},
           {"\"lr\": 0.01", "\"lr\": 0.02", "train.lr: 0.01 in the checkpoint, 0.02 now"},
           {"\"seq_len\": 32", "\"seq_len\": 64", "train.seq_len: 32"},
           {"/data/tokens", "/data/other", "data.path: /data/tokens in the checkpoint, /data/other now"}}) {
    const std::string said = refusal(config(), config(from, to));
    EXPECT_NE(said.find(key), std::string::npos) << from << " -> " << to << ": " << said;
  }
}

TEST(ResumeRules, EveryChangedFixedKeyIsNamedAtOnce) {
  std::string changed = config("\"seed\": 1234", "\"seed\": 7");
  changed.replace(changed.find("\"lr\": 0.01"), 10, "\"lr\": 0.03");
  const std::string message = refusal(config(), changed);
  EXPECT_NE(message.find("train.seed: 1234"), std::string::npos) << message;
  EXPECT_NE(message.find("train.lr: 0.01"), std::string::npos) << message;
}

// Older checkpoints lack keys added since; they cannot be compared and are not refused.
TEST(ResumeRules, KeysMissingFromTheCheckpointAreNotCompared) {
  EXPECT_EQ(refusal(config("\"seed\": 1234, ", ""), config("\"seed\": 1234", "\"seed\": 7")), "");
  EXPECT_EQ(refusal("", config()), "");
}

// model.ccqa.compress came after checkpoints were written, and its default changed from head_dim
// to heads: a checkpoint without the key was made under head_dim, and a run that now means heads
// is refused (its weights have other shapes) rather than failing at load.
TEST(ResumeRules, CheckpointsBeforeTheLayoutKeyAreHeadDim) {
  const std::string before = config();  // "ccqa": {"compression": 4, "kernel": ...}: no compress
  const std::string heads = config("\"compression\": 4", "\"compression\": 4, \"compress\": \"heads\"");
  const std::string head_dim = config("\"compression\": 4", "\"compression\": 4, \"compress\": \"head_dim\"");
  const std::string said = refusal(before, heads);
  EXPECT_NE(said.find("model.ccqa.compress: head_dim in the checkpoint, heads now"), std::string::npos) << said;
  EXPECT_EQ(refusal(before, head_dim), "");
}

// What a failed weight load (--init-from, eval, generate) adds: the fixed model.* keys alone,
// with both values; train.* and changeable model keys are not the weights' business.
TEST(ResumeRules, ModelDifferencesNameOnlyFixedModelKeys) {
  using hydra::train::model_differences;
  std::string changed = config("\"dim\": 32", "\"dim\": 64");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"seed\": 1234", "\"seed\": 7"}, {"\"kernel\": \"reference\"", "\"kernel\": \"fused\""}}) {
    changed.replace(changed.find(from), from.size(), to);
  }
  const std::string said = model_differences(config(), changed, "ckpt");
  EXPECT_NE(said.find("model.dim: 32 in the checkpoint, 64 now"), std::string::npos) << said;
  EXPECT_EQ(said.find("train.seed"), std::string::npos) << said;
  EXPECT_EQ(said.find("model.ccqa.kernel"), std::string::npos) << said;
  EXPECT_EQ(model_differences(config(), config(), "ckpt"), "");
  EXPECT_EQ(model_differences("", changed, "ckpt"), "");
}

TEST(ResumeRules, MostSpecificRuleWins) {
  EXPECT_TRUE(resume_rule("model.ccqa.kernel").may_change);
  EXPECT_FALSE(resume_rule("model.ccqa.compression").may_change);
  EXPECT_TRUE(resume_rule("train.steps").may_change);
  EXPECT_FALSE(resume_rule("train.warmup_steps").may_change);
  EXPECT_TRUE(resume_rule("parallel.zero_stage").may_change);
  EXPECT_FALSE(resume_rule("newsection.key").may_change);  // unknown: kept
}

// docs/INTERFACE.md's resume section names every entry of the table with its verdict.
TEST(ResumeRules, DocsListEveryRule) {
  std::ifstream in(std::string(HYDRA_SOURCE_DIR) + "/docs/INTERFACE.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const size_t section = doc.find("## What a resume may change");
  ASSERT_NE(section, std::string::npos);
  const std::string text = doc.substr(section, doc.find("\n## ", section + 1) - section);
  for (const auto& rule : hydra::train::resume_rules()) {
    const std::string key = rule.key.back() == '.' ? rule.key + "*" : rule.key;
    const std::string row = "| " + key + " | " + (rule.may_change ? "yes" : "no") + " |";
    EXPECT_NE(text.find(row), std::string::npos) << "missing row: " << row;
  }
}

}  // namespace
