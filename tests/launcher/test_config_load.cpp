// The config loader's precedence (defaults < preset < file < --set), typed values, lists and
// the JSON form of the resolved config, checked in process against hand-written values.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "common/errors.h"
#include "launcher/config_load.h"

namespace {

namespace fs = std::filesystem;
using hydra::launcher::Config;
using hydra::launcher::load_config;

class ConfigLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    // Per process: ctest runs the tests of this file in parallel processes.
    dir_ = fs::temp_directory_path() / ("hydra_cfg_load_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A preset beside the config file: found before the installed configs/.
    write("mypreset.yaml",
          "model:\n  dim: 128\n  heads: 8\n  kv_heads: 2\n  macro_blocks: 2\n  vocab_size: 1000\n"
          "  ccqa:\n    compression: 2\n");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(ConfigLoad, DefaultsFillWhatIsNotSet) {
  const Config c = load_config(write("a.yaml", "model:\n  preset: mypreset\n"), {});
  const Config defaults;
  EXPECT_EQ(c.train.steps, defaults.train.steps);
  EXPECT_EQ(c.parallel.tp, 1);
  EXPECT_EQ(c.model.pattern, defaults.model.pattern);
  EXPECT_DOUBLE_EQ(c.model.ccqa.qk_mean_gain, 0.25);
}

TEST_F(ConfigLoad, PresetThenFileThenSet) {
  const std::string cfg = write("b.yaml",
                                "model:\n  preset: mypreset\n  dim: 256\n"
                                "train:\n  steps: 7\n  lr: 0.001\n");
  const Config c = load_config(cfg, {"train.steps=9", "model.ccqa.compression=4"});
  EXPECT_EQ(c.model.heads, 8);               // from the preset
  EXPECT_EQ(c.model.dim, 256);               // the file beats the preset
  EXPECT_EQ(c.model.ccqa.compression, 4);    // --set beats the preset
  EXPECT_EQ(c.train.steps, 9);               // --set beats the file
  EXPECT_DOUBLE_EQ(c.train.lr, 0.001);
  EXPECT_EQ(c.source, cfg);
}

TEST_F(ConfigLoad, SetOrderLastWins) {
  const Config c = load_config(write("c.yaml", "model:\n  preset: mypreset\n"),
                               {"train.steps=1", "train.steps=2"});
  EXPECT_EQ(c.train.steps, 2);
}

TEST_F(ConfigLoad, ListsAndBoolsFromFileAndSet) {
  const Config c = load_config(write("d.yaml",
                                     "model:\n  preset: mypreset\n  pattern: [mqa, mla]\n"
                                     "  mod:\n    enabled: true\n    layers: [1]\n"),
                               {"model.tie_embeddings=true", "model.mod.layers=[0, 1]"});
  EXPECT_EQ(c.model.pattern, (std::vector<std::string>{"mqa", "mla"}));
  EXPECT_TRUE(c.model.mod.enabled);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.mod.layers, (std::vector<int>{0, 1}));
}

// CCQA's layout defaults to heads (docs/MODEL.md, "Layout"; it was head_dim until 2026-12-06).
TEST_F(ConfigLoad, CcqaLayoutDefaultsToHeads) {
  const Config c = load_config(write("g.yaml", "model:\n  preset: mypreset\n"), {});
  EXPECT_EQ(c.model.ccqa.compress, "heads");
}

// Every shipped config with a CCQA layer names its layout, so that a change of the default never
// silently changes a shipped model (its parameter count, its checkpoints' shapes).
TEST_F(ConfigLoad, ShippedConfigsNameTheirCcqaLayout) {
  int with_ccqa = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(HYDRA_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string yaml = text.str();
    const std::string pattern = yaml.substr(yaml.find("pattern:"), yaml.find('\n', yaml.find("pattern:")) - yaml.find("pattern:"));
    if (pattern.find("ccqa") == std::string::npos) continue;
    ++with_ccqa;
    EXPECT_NE(yaml.find("    compress: "), std::string::npos) << entry.path() << " has a ccqa layer and no model.ccqa.compress";
  }
  EXPECT_GT(with_ccqa, 10);
}

TEST_F(ConfigLoad, PresetBySetAlone) {
  const Config c = load_config("", {"model.preset=tiny"});  // the installed configs/tiny.yaml
  EXPECT_EQ(c.model.preset, "tiny");
  EXPECT_GT(c.model.dim, 0);
}

TEST_F(ConfigLoad, JsonHasEverySectionAndRoundTripFloats) {
  const Config c = load_config(write("e.yaml", "model:\n  preset: mypreset\ntrain:\n  lr: 0.1\n"), {});
  const std::string json = hydra::launcher::config_to_json(c).dump();
  for (const char* piece : {"\"model\": {", "\"parallel\": {", "\"train\": {", "\"data\": {",
                            "\"checkpoint\": {", "\"log\": {", "\"compression\": 2",
                            "\"lr\": 0.1,", "\"pattern\": [\"mqa\""}) {
    EXPECT_NE(json.find(piece), std::string::npos) << piece << " not in " << json;
  }
}

TEST_F(ConfigLoad, ErrorsAreConfigErrors) {
  EXPECT_THROW(load_config(write("f.yaml", "model:\n  preset: mypreset\n  bogus: 1\n"), {}),
               hydra::common::ConfigError);
}

}  // namespace
