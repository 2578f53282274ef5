// The fault matrix, command line and config (docs/FAULTS.md): what a careless or hostile user
// writes in a config, a preset or the command line. Each case runs the real `hydra` and
// asserts exit code 2, a message naming the file, line, key or value, and that nothing was
// written: no checkpoint, no metrics file, the user's files unchanged.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/launcher/run_hydra.h"
#include "tests/launcher/valid_model.h"

namespace {

namespace fs = std::filesystem;
using hydra::test::HydraRun;

// A complete, valid model section: cases add to it or break it.
const std::string kModel = hydra::test::kValidModelYaml;

class FaultsConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("hydra_faults_config_" + std::string(test->name()) + "_" +
                                        std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes dir/name; returns its path.
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::string read(const std::string& name) const {
    std::ifstream in(dir_ / name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // `hydra ARGS...`, output in dir/out.log.
  HydraRun hydra(const std::vector<std::string>& args) const {
    return hydra::test::run_hydra(args, (dir_ / "out.log").string());
  }

  // `hydra train --config dir/cfg.yaml` (written from `yaml`) with its checkpoints and metrics
  // under dir/run; then `extra` arguments. A config fault must leave dir/run empty.
  HydraRun train(const std::string& yaml, const std::vector<std::string>& extra = {}) {
    const std::string cfg = write("cfg.yaml", yaml);
    std::vector<std::string> args = {"train", "--config", cfg,
                                     "--set", "checkpoint.dir=" + (dir_ / "run" / "ckpt").string(),
                                     "--set", "log.jsonl=" + (dir_ / "run" / "metrics.jsonl").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return hydra(args);
  }

  // Exit 2, every piece in the message, nothing written, the config file as the user wrote it.
  void expect_refused(const HydraRun& run, const std::vector<std::string>& pieces, const std::string& yaml = "") {
    EXPECT_EQ(run.exit_code, 2) << run.output;
    for (const auto& piece : pieces) {
      EXPECT_NE(run.output.find(piece), std::string::npos) << "missing '" << piece << "' in: " << run.output;
    }
    EXPECT_FALSE(fs::exists(dir_ / "run" / "ckpt")) << "a refused run wrote a checkpoint";
    EXPECT_FALSE(fs::exists(dir_ / "run" / "metrics.jsonl")) << "a refused run wrote metrics";
    if (!yaml.empty()) EXPECT_EQ(read("cfg.yaml"), yaml);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// --- YAML that yaml-cpp would accept silently ---------------------------------------------

TEST_F(FaultsConfig, DuplicateKey) {
  // yaml-cpp keeps both pairs; the loader used to apply the second: 3 steps, not 2.
  const std::string yaml = kModel + "train:\n  steps: 2\n  steps: 3\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":9: duplicate key 'train.steps'", "first at " + path("cfg.yaml") + ":8"},
                 yaml);
}

TEST_F(FaultsConfig, DuplicateSection) {
  const std::string yaml = kModel + "train:\n  steps: 2\nlog:\n  every: 1\ntrain:\n  lr: 0.1\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":11: duplicate key 'train'", path("cfg.yaml") + ":7"}, yaml);
}

TEST_F(FaultsConfig, DuplicateKeyInFlowMap) {
  const std::string yaml = kModel + "  mod: {enabled: true, capacity: 0.5, capacity: 0.9}\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":7: duplicate key 'model.mod.capacity'"}, yaml);
}

TEST_F(FaultsConfig, DuplicateKeyInPreset) {
  write("mypreset.yaml", kModel + "  ccqa:\n    compression: 2\n    conv_kernel: 3\n    compression: 4\n");
  const std::string yaml = "model:\n  preset: mypreset\n";
  expect_refused(train(yaml), {path("mypreset.yaml") + ":10: duplicate key 'model.ccqa.compression'"}, yaml);
}

TEST_F(FaultsConfig, SecondYamlDocument) {
  // yaml-cpp's LoadFile reads the first document and drops the rest.
  const std::string yaml = kModel + "---\ntrain:\n  steps: 5\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":8: a second YAML document"}, yaml);
}

TEST_F(FaultsConfig, KeyThatIsAList) {
  // Was an internal error (exit 4) from yaml-cpp's conversion.
  const std::string yaml = kModel + "  [dim, heads]: 3\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":7: model: a key must be a plain name, got a list"}, yaml);
}

// --- values --------------------------------------------------------------------------------

TEST_F(FaultsConfig, NullValueSaysEmptyAndTypeWanted) {
  const std::string yaml = kModel + "train:\n  steps: ~\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":8: train.steps: expected an integer in [0, 1000000000], "
                               "got an empty value (null)"},
                 yaml);
}

TEST_F(FaultsConfig, MissingValueNamesTheKeysLine) {
  // `steps:` with nothing: the null's position is the next line's; the message names the key's.
  const std::string yaml = kModel + "train:\n  steps:\n  lr: 0.1\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":8: train.steps: expected an integer", "empty value (null)"}, yaml);
}

TEST_F(FaultsConfig, NullStringValue) {
  const std::string yaml = kModel + "data:\n  path:\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":8: data.path: expected a string, got an empty value (null)",
                               "write \"\" for an empty string"},
                 yaml);
}

TEST_F(FaultsConfig, IntegerBoundsPrintedAsIntegers) {
  expect_refused(train(kModel, {"--set", "train.steps=-1"}),
                 {"--set: train.steps: expected an integer in [0, 1000000000], got '-1'"});
}

TEST_F(FaultsConfig, NumberBoundsPrintedExactly) {
  // The bound 0.999999999 used to print as 1, next to a refused value of 1.
  expect_refused(train(kModel, {"--set", "train.beta2=1"}), {"train.beta2: expected a number in [", "0.999999999]",
                                                             "got '1'"});
}

TEST_F(FaultsConfig, SectionNotAMapShowsTheValue) {
  const std::string yaml = kModel + "train: 5\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":7: train: expected a map of keys, got '5'"}, yaml);
}

TEST_F(FaultsConfig, SetOfASection) {
  expect_refused(train(kModel, {"--set", "train=5"}), {"--set train: a section, not a key", "train.KEY=value"});
}

TEST_F(FaultsConfig, UnknownSectionSuggestsTheSection) {
  const std::string yaml = kModel + "trian:\n  steps: 2\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":7: unknown key 'trian' (did you mean train?)"}, yaml);
}

// --- presets -------------------------------------------------------------------------------

TEST_F(FaultsConfig, UnknownPresetListsOnlyPresets) {
  // Beside the config: a run config without a full model and a broken file; neither is a preset.
  write("other_run.yaml", "train:\n  steps: 3\n");
  write("broken.yaml", "model: [\n");
  write("mine.yaml", kModel);  // a complete model: a preset
  const std::string yaml = "model:\n  preset: tiyn\n";
  const HydraRun run = train(yaml);
  expect_refused(run, {path("cfg.yaml") + ":2: model.preset: no preset named 'tiyn' (did you mean tiny?)",
                       "presets: ", "mine", "tiny"},
                 yaml);
  const std::string listed = run.output.substr(run.output.find("presets: "));
  for (const char* not_a_preset : {"other_run", "broken", "cfg"}) {
    EXPECT_EQ(listed.find(not_a_preset), std::string::npos) << not_a_preset << " listed as a preset: " << run.output;
  }
}

TEST_F(FaultsConfig, NamedFileIsNotAPreset) {
  // Used to apply nothing and then report model.dim missing from the config.
  write("base.yaml", "model:\n  dim: 64\n  heads: 4\ntrain:\n  steps: 3\n");
  const std::string yaml = "model:\n  preset: base\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":2: model.preset: " + path("base.yaml") + " is not a preset",
                               "does not set model.kv_heads, model.macro_blocks, model.vocab_size"},
                 yaml);
}

TEST_F(FaultsConfig, EmptyPresetNamesItsLine) {
  const std::string yaml = "model:\n  preset:\n  dim: 64\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":2: model.preset: expected a string, got an empty value (null)"},
                 yaml);
}

TEST_F(FaultsConfig, PresetGivenAsAPath) {
  const std::string yaml = "model:\n  preset: ../configs/tiny\n";
  expect_refused(train(yaml), {path("cfg.yaml") + ":2: model.preset: '../configs/tiny' is a path"}, yaml);
}

// --- the command line ----------------------------------------------------------------------

TEST_F(FaultsConfig, ConfigIsADirectory) {
  fs::create_directories(dir_ / "confdir");
  expect_refused(hydra({"info", "--config", path("confdir")}), {path("confdir") + ": cannot read config file: it is a "
                                                                "directory"});
}

TEST_F(FaultsConfig, MisspeltCommandSuggests) {
  expect_refused(hydra({"trian", "--config", write("cfg.yaml", kModel)}),
                 {"unknown command 'trian' (did you mean train?)"});
}

TEST_F(FaultsConfig, MisspeltActionSuggests) {
  expect_refused(hydra({"data", "prepaer", "--input", "x", "--output", path("out")}),
                 {"unknown command 'data prepaer' (did you mean data prepare?)"});
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(FaultsConfig, GroupWithoutAction) {
  expect_refused(hydra({"ckpt"}), {"hydra ckpt needs an action: consolidate|inspect"});
}

TEST_F(FaultsConfig, MisspeltOptionSuggests) {
  expect_refused(hydra({"info", "--confg", write("cfg.yaml", kModel)}),
                 {"unknown option '--confg' for hydra info (did you mean --config?)"});
}

TEST_F(FaultsConfig, OptionGivenTwice) {
  // The second --config used to replace the first silently.
  const std::string a = write("a.yaml", kModel);
  expect_refused(hydra({"info", "--config", a, "--config", write("b.yaml", kModel)}),
                 {"--config given twice for hydra info"});
}

TEST_F(FaultsConfig, EmptyOptionValue) {
  // `--resume ""` used to mean "no resume": a fresh run over the user's checkpoints.
  expect_refused(train(kModel, {"--resume", ""}), {"--resume needs a value, got an empty one"});
}

TEST_F(FaultsConfig, OptionInPlaceOfAValue) {
  expect_refused(hydra({"info", "--config", "--json"}), {"--config needs a value, got the option '--json'"});
}

TEST_F(FaultsConfig, UnexpectedArgument) {
  expect_refused(hydra({"info", "--config", write("cfg.yaml", kModel), "extra.yaml"}),
                 {"unexpected argument 'extra.yaml' for hydra info"});
}

TEST_F(FaultsConfig, VersionPrintsCommitAndBuild) {
  // Used to exit 2 with "hydra  needs --config FILE".
  const HydraRun run = hydra({"--version"});
  EXPECT_EQ(run.exit_code, 0) << run.output;
  const std::regex line(
      "hydra [0-9]+\\.[0-9]+\\.[0-9]+ \\(commit ([0-9a-f]{7,40}(-dirty)?|unknown), "
      "(CPU build, LibTorch 1\\.13|CUDA build, LibTorch 2)\\.[0-9.]+\\)\n");
  EXPECT_TRUE(std::regex_match(run.output, line)) << run.output;
}

}  // namespace
