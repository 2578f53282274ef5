// Bad configs and bad --set values: each must stop `hydra info` with exit code 2 and a
// message naming the key (and the file and line when the value came from a file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/launcher/run_hydra.h"
#include "tests/launcher/valid_model.h"

namespace {

namespace fs = std::filesystem;

struct BadCase {
  const char* name;
  std::string yaml;               // config file contents
  std::vector<std::string> sets;  // --set values
  std::vector<std::string> must_mention;  // substrings the message must contain
};

std::vector<BadCase> bad_cases() {
  const std::string m = hydra::test::kValidModelYaml;
  return {
      {"unknown_section", m + "modle:\n  dim: 3\n", {}, {"modle", "cfg.yaml:7"}},
      {"unknown_nested_key", m + "  hedas: 4\n", {}, {"model.hedas", "did you mean model.heads", "cfg.yaml:7"}},
      {"int_not_a_number", "model:\n  dim: abc\n  heads: 4\n  kv_heads: 2\n  macro_blocks: 1\n  vocab_size: 256\n", {},
       {"model.dim", "expected an integer", "'abc'", "cfg.yaml:2"}},
      {"int_given_float", m + "train:\n  steps: 1.5\n", {}, {"train.steps", "expected an integer"}},
      {"bool_not_bool", m + "  tie_embeddings: maybe\n", {}, {"model.tie_embeddings", "true or false"}},
      {"zero_stage_out_of_range", m + "parallel:\n  zero_stage: 3\n", {}, {"parallel.zero_stage", "[0, 2]", "cfg.yaml:8"}},
      {"negative_lr", m + "train:\n  lr: -1\n", {}, {"train.lr", "'-1'"}},
      {"bad_enum", m + "train:\n  dtype: fp8\n", {}, {"train.dtype", "fp32|bf16", "'fp8'"}},
      {"bad_list_element", m + "  pattern: [mqa, sqa]\n", {}, {"model.pattern", "'sqa'", "mqa|gqa|mha|ccqa|mla"}},
      {"gqa_kv_heads_do_not_divide_heads", m + "  pattern: [gqa, mqa]\n", {"model.kv_heads=3"},
       {"model.kv_heads", "does not divide model.heads 4"}},
      {"gqa_kv_heads_do_not_split_over_tp", m + "  pattern: [gqa, mqa]\n", {"parallel.tp=4"},
       {"parallel.tp", "does not divide model.kv_heads 2"}},
      {"list_given_scalar", m + "  mod:\n    layers: 3\n", {}, {"model.mod.layers", "a list of integers"}},
      {"section_not_a_map", m + "train: 5\n", {}, {"train", "expected a map"}},
      {"missing_required", "model:\n  dim: 64\n  heads: 4\n  kv_heads: 2\n  vocab_size: 256\n", {},
       {"missing required key model.macro_blocks"}},
      {"bad_preset", "model:\n  preset: nonexistent\n", {}, {"model.preset", "nonexistent", "presets:"}},
      {"yaml_syntax", m + "train: [1, 2\n", {}, {"cfg.yaml:", "YAML syntax error"}},
      {"heads_do_not_divide_dim", "model:\n  dim: 66\n  heads: 4\n  kv_heads: 2\n  macro_blocks: 1\n  vocab_size: 256\n", {},
       {"model.heads", "model.dim"}},
      {"ccqa_heads_not_divisible", m + "  ccqa:\n    compress: heads\n    compression: 8\n", {},
       {"model.ccqa.compression", "must divide model.heads 4"}},
      {"ccqa_kv_heads_do_not_divide", m, {"model.heads=12", "model.kv_heads=6", "model.dim=96", "model.ccqa.compress=heads"},
       {"model.ccqa.compress", "3 query heads", "2 key/value heads"}},
      {"ccqa_bad_compress", m + "  ccqa:\n    compress: channels\n", {}, {"model.ccqa.compress", "head_dim|heads"}},
      {"set_without_equals", m, {"train.steps"}, {"--set", "train.steps", "key.path=value"}},
      {"set_unknown_key", m, {"train.stpes=5"}, {"--set", "train.stpes", "did you mean train.steps"}},
      {"set_wrong_type", m, {"train.steps=ten"}, {"--set", "train.steps", "'ten'"}},
      {"set_out_of_range", m, {"parallel.tp=0"}, {"--set", "parallel.tp"}},
      {"set_bad_list", m, {"model.pattern=[mqa, xyz]"}, {"--set", "model.pattern", "'xyz'"}},
      {"set_bad_preset", m, {"model.preset=huge"}, {"--set", "model.preset", "huge"}},
      {"world_mismatch", m + "parallel:\n  dp: 2\n", {}, {"parallel.dp", "world size is 1"}},
      // (head_dim: under the default heads layout the model's one CCQA query head would be refused first)
      {"tp_does_not_divide_world", m, {"parallel.tp=2", "model.ccqa.compress=head_dim"}, {"parallel.tp", "world size 1"}},
      {"tp_does_not_divide_ccqa_query_heads", m, {"parallel.tp=2"}, {"parallel.tp", "CCQA's 1 query heads", "model.ccqa.compress: head_dim"}},
#ifndef HYDRA_CUDA
      {"cuda_on_cpu_build", m + "train:\n  device: cuda\n", {}, {"train.device", "CUDA build"}},
#endif
  };
}

// Names the case in ctest output instead of dumping its bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, ExitTwoNamingTheKey) {
  const BadCase& c = GetParam();
  const fs::path dir = fs::temp_directory_path() / ("hydra_cfg_" + std::string(c.name));
  fs::create_directories(dir);
  const fs::path cfg = dir / "cfg.yaml";
  std::ofstream(cfg) << c.yaml;
  std::vector<std::string> args = {"info", "--config", cfg.string()};
  for (const auto& s : c.sets) args.insert(args.end(), {"--set", s});
  const auto run = hydra::test::run_hydra(args, (dir / "out.txt").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  for (const auto& piece : c.must_mention) {
    EXPECT_NE(run.output.find(piece), std::string::npos) << "missing '" << piece << "' in: " << run.output;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Launcher, ConfigErrors, ::testing::ValuesIn(bad_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigErrorsCli, MissingConfigFileNamesIt) {
  const auto run = hydra::test::run_hydra({"info", "--config", "/nonexistent/run.yaml"},
                                          (fs::temp_directory_path() / "hydra_missing.txt").string());
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("/nonexistent/run.yaml"), std::string::npos) << run.output;
}

TEST(ConfigErrorsCli, UnknownOptionAndCommand) {
  const auto out = (fs::temp_directory_path() / "hydra_cli.txt").string();
  auto run = hydra::test::run_hydra({"info", "--config", "x.yaml", "--bogus"}, out);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("--bogus"), std::string::npos) << run.output;
  run = hydra::test::run_hydra({"frobnicate"}, out);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("frobnicate"), std::string::npos) << run.output;
  run = hydra::test::run_hydra({"--help"}, out);
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.output.find("info "), std::string::npos) << run.output;
}

}  // namespace
