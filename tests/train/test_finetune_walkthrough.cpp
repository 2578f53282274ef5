// README.md's "Fine-tuning walkthrough", run exactly as written (its ```sh block, from a
// scratch directory where configs/ and build/hydra lead to this tree's), then checked:
// the fine-tune started from the pretrained weights (its first loss is the pretrained model's
// loss on the fine-tuning corpus's first batch, computed here from the consolidated file), the
// frozen tensors are the pretrained ones bit for bit, and generation produced tokens.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/h5_file.h"
#include "data/batch_split.h"
#include "data/loader.h"
#include "launcher/config_load.h"
#include "model/hydra_model.h"
#include "tests/train/freeze_checks.h"
#include "tests/train/train_sandbox.h"

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The ```sh block after the heading, as text.
std::string walkthrough_block() {
  const std::string readme = read_text(fs::path(HYDRA_SOURCE_DIR) / "README.md");
  const size_t section = readme.find("## Fine-tuning walkthrough");
  EXPECT_NE(section, std::string::npos) << "README.md has no fine-tuning walkthrough";
  const size_t begin = readme.find("```sh\n", section) + 6;
  return readme.substr(begin, readme.find("```", begin) - begin);
}

// The block's commands, continuation lines joined, comments dropped, split into words
// (single quotes group words, as the shell does).
std::vector<std::vector<std::string>> commands_of(const std::string& block) {
  const std::string joined = std::regex_replace(block, std::regex("\\\\\n"), " ");
  std::vector<std::vector<std::string>> out;
  std::istringstream lines(joined);
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(' ') == std::string::npos || line[line.find_first_not_of(' ')] == '#') continue;
    std::vector<std::string> words;
    std::string word;
    bool quoted = false, any = false;
    for (char c : line) {
      if (c == '\'' || c == '"') {
        quoted = !quoted, any = true;
      } else if (c == ' ' && !quoted) {
        if (any) words.push_back(word);
        word.clear(), any = false;
      } else {
        word += c, any = true;
      }
    }
    if (any) words.push_back(word);
    out.push_back(words);
  }
  return out;
}

// The value after each `--set` of a command.
std::vector<std::string> sets_of(const std::vector<std::string>& command) {
  std::vector<std::string> sets;
  for (size_t i = 0; i + 1 < command.size(); ++i) {
    if (command[i] == "--set") sets.push_back(command[i + 1]);
  }
  return sets;
}

// train.freeze's patterns in a command's --set values.
std::vector<std::string> freeze_patterns(const std::vector<std::string>& sets) {
  for (const auto& s : sets) {
    if (s.rfind("train.freeze=[", 0) != 0) continue;
    std::vector<std::string> out;
    std::istringstream list(s.substr(14, s.find(']') - 14));
    for (std::string p; std::getline(list, p, ',');) out.push_back(p.substr(p.find_first_not_of(' ')));
    return out;
  }
  return {};
}

// The loss hydra train's first step computes: the model (weights of a consolidated file) on
// the first global batch of the run's corpus, in training routing, one micro-batch.
double first_batch_loss(const hydra::train::RunConfig& config, const std::string& weights_file) {
  hydra::model::HydraModelImpl model(config.model);
  const auto weights = hydra::checkpoint::H5File::open_read(weights_file);
  {
    const c10::NoGradGuard no_grad;
    for (auto& item : model.named_parameters()) {
      const at::Tensor stored = weights.read_tensor("/model/" + item.key());
      at::Tensor param = item.value();
      (param.dim() > 0 ? param.narrow(0, 0, stored.size(0)) : param).copy_(stored);  // (vocabulary padding: 0)
    }
  }
  const auto data = hydra::data::open_data_source(config.data, config.train.seq_len, config.train.seed);
  const auto split = hydra::data::make_batch_split(config.train.global_batch, config.train.global_batch, 1, 0);
  const hydra::data::Batch batch = data.train->micro_batch(split, 0, 0);
  hydra::model::ForwardOptions fwd;
  fwd.return_logits = false;
  return model.forward(batch.inputs, batch.targets, fwd).lm_loss.item<double>();
}

double first_loss_of(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::string row;
  std::getline(in, row);
  EXPECT_NE(row.find("\"step\": 1,"), std::string::npos) << row;
  return hydra::test::TrainSandbox::loss_of(row);
}

TEST(FinetuneWalkthrough, RunsAsWrittenAndFineTunesFromThePretrainedWeights) {
  const fs::path dir = fs::temp_directory_path() / ("hydra_finetune_walkthrough_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "build");
  fs::create_directory_symlink(fs::path(HYDRA_SOURCE_DIR) / "configs", dir / "configs");
  fs::create_symlink(HYDRA_BIN, dir / "build" / "hydra");
  const std::string block = walkthrough_block();
  std::ofstream(dir / "walkthrough.sh") << "set -e\n" << block;
  const int status = std::system(("cd " + hydra::test::shell_quote(dir.string()) + " && bash walkthrough.sh > out.log 2>&1").c_str());
  const std::string output = read_text(dir / "out.log");
  ASSERT_EQ(status, 0) << output;

  // Generation produced tokens (its summary line).
  const std::smatch found = [&] {
    std::smatch m;
    std::regex_search(output, m, std::regex("generate: ([0-9]+) tokens in"));
    return m;
  }();
  ASSERT_FALSE(found.empty()) << output;
  EXPECT_GT(std::stoi(found[1]), 0) << output;

  // The fine-tune: its first loss is the pretrained model's on the new corpus's first batch.
  const auto commands = commands_of(block);
  std::vector<std::string> tune;
  for (const auto& c : commands) {
    if (std::find(c.begin(), c.end(), "--init-from") != c.end()) tune = c;
  }
  ASSERT_FALSE(tune.empty()) << "no --init-from command in the walkthrough";
  std::vector<std::string> sets = sets_of(tune);
  for (auto& s : sets) {  // (relative paths are the scratch directory's)
    if (s.rfind("data.path=", 0) == 0) s = "data.path=" + (dir / s.substr(10)).string();
  }
  const auto config = hydra::launcher::load_config((dir / "configs" / "tiny.yaml").string(), sets);
  const double expected = first_batch_loss(config, (dir / "runs/ft/pretrained.h5").string());
  const double got = first_loss_of(dir / "runs/ft/tune.jsonl");
  EXPECT_NEAR(got, expected, 1e-5 * expected) << "the fine-tune's first loss against the pretrained model's";
  EXPECT_NE(output.find("init-from: weights of runs/ft/pretrain/step_00000012"), std::string::npos) << output;

  // The frozen tensors are the pretrained ones, bit for bit; the others trained.
  const auto patterns = freeze_patterns(sets);
  ASSERT_FALSE(patterns.empty()) << "the walkthrough's fine-tune freezes nothing";
  const int frozen = hydra::test::expect_frozen_unchanged((dir / "runs/ft/tuned.h5").string(),
                                                          (dir / "runs/ft/pretrained.h5").string(), patterns);
  EXPECT_GT(frozen, 10);
  fs::remove_all(dir);
}

}  // namespace
