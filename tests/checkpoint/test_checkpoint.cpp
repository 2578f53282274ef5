// Checkpoint save/load on one process: weights and AdamW state come back bit for bit, only
// committed directories are found, old ones are pruned, and bad checkpoints are InputErrors
// that name the file and the parameter.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "common/errors.h"
#include "tests/checkpoint/zlib_crc32.h"

namespace {

namespace fs = std::filesystem;
using namespace hydra;

parallel::NamedParams make_params(int seed, int64_t width = 3) {
  at::manual_seed(seed);
  return {{"embed.weight", at::randn({5, width})},
          {"blocks.0.layers.0.attn_norm.weight", at::randn({width})},
          {"head.weight", at::randn({5, width}).to(at::kBFloat16)}};
}

struct CheckpointTest : ::testing::Test {
  void SetUp() override {
    root = (fs::temp_directory_path() / ("hydra_ckpt_" + std::to_string(::getpid()))).string();
    fs::remove_all(root);
  }
  void TearDown() override { fs::remove_all(root); }
  checkpoint::SaveRequest request(int64_t step) {
    checkpoint::SaveRequest r;
    r.root = root;
    r.keep = 2;
    r.progress = {step, step * 8, step * 8 * 16, 1};
    r.config_json = "model:\n  dim: 3\n";
    r.layout = {{"world", 1}, {"dp", 1}, {"tp", 1}, {"pp", 1}, {"zero_stage", 0}, {"micro_batches", 1}};
    return r;
  }
  std::string root;
};

TEST_F(CheckpointTest, WeightsAndOptimizerRoundTripExactly) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  parallel::AdamWState optim = parallel::make_adamw_state(layout, params, {0, layout.numel});
  parallel::adamw_step(optim, at::randn({layout.numel}), parallel::AdamWHyper{at::scalar_tensor(3e-4, at::kDouble)});
  const std::string dir = checkpoint::save_checkpoint(request(7), params, layout, &optim, nullptr);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "COMMIT"));

  parallel::NamedParams fresh = make_params(2);
  parallel::AdamWState fresh_optim = parallel::make_adamw_state(layout, fresh, {0, layout.numel});
  const auto loaded = checkpoint::load_checkpoint(dir, fresh, layout, &fresh_optim);
  EXPECT_EQ(loaded.progress.step, 7);
  EXPECT_EQ(loaded.progress.consumed_samples, 56);
  EXPECT_EQ(loaded.progress.skipped, 1);
  EXPECT_EQ(loaded.config_json, "model:\n  dim: 3\n");
  EXPECT_EQ(loaded.layout.at("world"), 1);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(at::equal(fresh[i].second, params[i].second)) << params[i].first;
    EXPECT_EQ(fresh[i].second.scalar_type(), params[i].second.scalar_type());
  }
  EXPECT_TRUE(at::equal(fresh_optim.master, optim.master));
  EXPECT_TRUE(at::equal(fresh_optim.exp_avg, optim.exp_avg));
  EXPECT_TRUE(at::equal(fresh_optim.exp_avg_sq, optim.exp_avg_sq));
  EXPECT_EQ(parallel::adamw_steps(fresh_optim), 1);
}

TEST_F(CheckpointTest, OnlyCommittedAreFoundAndOldOnesPruned) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  for (int64_t step : {10, 20, 30}) checkpoint::save_checkpoint(request(step), params, layout, nullptr, nullptr);
  EXPECT_FALSE(fs::exists(fs::path(root) / checkpoint::step_dir_name(10)));  // keep = 2
  // A save that died before its commit marker is never picked.
  fs::create_directories(fs::path(root) / checkpoint::step_dir_name(40));
  fs::create_directories(fs::path(root) / (checkpoint::step_dir_name(50) + ".tmp"));
  EXPECT_EQ(checkpoint::find_latest(root), (fs::path(root) / checkpoint::step_dir_name(30)).string());
  EXPECT_THROW(checkpoint::read_index((fs::path(root) / checkpoint::step_dir_name(40)).string()),
               common::InputError);
}

TEST_F(CheckpointTest, AnotherModelShapeNamesTheParameter) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  const std::string dir = checkpoint::save_checkpoint(request(1), params, layout, nullptr, nullptr);
  parallel::NamedParams wider = make_params(1, 4);
  try {
    checkpoint::load_checkpoint(dir, wider, parallel::make_flat_layout(wider), nullptr);
    FAIL() << "shape mismatch not detected";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("embed.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("another model shape"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointTest, TruncatedRankFileIsInputErrorNamingIt) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  const std::string dir = checkpoint::save_checkpoint(request(1), params, layout, nullptr, nullptr);
  const fs::path rank_file = fs::path(dir) / "rank_00000.h5";
  fs::resize_file(rank_file, fs::file_size(rank_file) / 3);
  try {
    checkpoint::load_checkpoint(dir, params, layout, nullptr);
    FAIL() << "truncation not detected";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank_00000.h5"), std::string::npos) << e.what();
  }
}

// The index records each rank file's size and whole-file CRC-32, equal to what Python's zlib
// computes over the file; the per-rank sidecars they came from are gone after the commit.
TEST_F(CheckpointTest, IndexRecordsEachFilesSizeAndCrc) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  const std::string dir = checkpoint::save_checkpoint(request(1), params, layout, nullptr, nullptr);
  const fs::path rank_file = fs::path(dir) / "rank_00000.h5";
  const auto index = checkpoint::read_index(dir);
  ASSERT_EQ(index.files.size(), 1u);
  const checkpoint::FileChecksum recorded = index.files.at("rank_00000.h5");
  EXPECT_EQ(recorded.bytes, static_cast<int64_t>(fs::file_size(rank_file)));
  EXPECT_EQ(recorded.crc32, static_cast<uint32_t>(hydra::test::zlib_crc32_of_file(rank_file.string())));
  EXPECT_FALSE(fs::exists(rank_file.string() + ".crc32"));
}

// A rank file that grew (appended bytes no dataset covers, or another file put in its place)
// disagrees with the index and is refused before any read, naming the file.
TEST_F(CheckpointTest, FileOfAnotherSizeThanTheIndexIsRefused) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  const std::string dir = checkpoint::save_checkpoint(request(1), params, layout, nullptr, nullptr);
  const fs::path rank_file = fs::path(dir) / "rank_00000.h5";
  std::ofstream(rank_file, std::ios::app | std::ios::binary) << std::string(100, 'x');
  try {
    checkpoint::load_checkpoint(dir, params, layout, nullptr);
    FAIL() << "a rank file that disagrees with the index was loaded";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank_00000.h5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the index records"), std::string::npos) << e.what();
  }
}

// Vocabulary padding (rows from model.vocab_size on) is never stored: a tensor padded to 8
// rows for one tp size is stored as its 5 real rows, and loads into one padded to 12 rows
// with the padding zero, weights and AdamW state alike.
TEST_F(CheckpointTest, VocabularyPaddingIsNotStoredAndLoadsAsZero) {
  at::manual_seed(4);
  parallel::NamedParams params = {{"embed.weight", at::randn({8, 3})}};
  const auto layout = parallel::make_flat_layout(params);
  parallel::AdamWState optim = parallel::make_adamw_state(layout, params, {0, layout.numel});
  parallel::adamw_step(optim, at::randn({layout.numel}), parallel::AdamWHyper{at::scalar_tensor(3e-4, at::kDouble)});
  model::ShardInfo shard{{8, 3}, {0, 0}, -1, 5, true};
  auto req = request(1);
  req.placements = {shard};
  const std::string dir = checkpoint::save_checkpoint(req, params, layout, &optim, nullptr);
  {
    const auto f = checkpoint::H5File::open_read(dir + "/rank_00000.h5");
    EXPECT_EQ(f.dataset_shape("/model/embed.weight"), (std::vector<int64_t>{5, 3}));
    EXPECT_EQ(f.attr_ints("/model/embed.weight", "global_shape"), (std::vector<int64_t>{5, 3}));
    EXPECT_EQ(f.attr_ints("/optim/master/embed.weight", "flat_range"), (std::vector<int64_t>{0, 15}));
  }
  parallel::NamedParams bigger = {{"embed.weight", at::ones({12, 3})}};
  const auto big_layout = parallel::make_flat_layout(bigger);
  parallel::AdamWState big_optim = parallel::make_adamw_state(big_layout, bigger, {0, big_layout.numel});
  parallel::adamw_step(big_optim, at::ones({big_layout.numel}), parallel::AdamWHyper{at::scalar_tensor(3e-4, at::kDouble)});
  checkpoint::load_checkpoint(dir, bigger, big_layout, &big_optim, {model::ShardInfo{{12, 3}, {0, 0}, -1, 5, true}});
  EXPECT_TRUE(at::equal(bigger[0].second.narrow(0, 0, 5), params[0].second.narrow(0, 0, 5)));
  EXPECT_TRUE(at::equal(bigger[0].second.narrow(0, 5, 7), at::zeros({7, 3})));
  EXPECT_TRUE(at::equal(big_optim.exp_avg.narrow(0, 0, 15), optim.exp_avg.narrow(0, 0, 15)));
  EXPECT_TRUE(at::equal(big_optim.exp_avg_sq.narrow(0, 15, 21), at::zeros({21})));
}

// Version 1 checkpoints (no offsets, no catalog) are refused with a message that says why.
TEST_F(CheckpointTest, FormatVersionOneIsRefusedClearly) {
  parallel::NamedParams params = make_params(1);
  const auto layout = parallel::make_flat_layout(params);
  const std::string dir = checkpoint::save_checkpoint(request(1), params, layout, nullptr, nullptr);
  {
    auto f = checkpoint::H5File::create(dir + "/index.h5");
    f.set_attr("/", "format", std::string("hydra-checkpoint"));
    f.set_attr("/", "version", int64_t{1});
  }
  try {
    checkpoint::load_checkpoint(dir, params, layout, nullptr);
    FAIL() << "version 1 loaded";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("format version 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("index.h5"), std::string::npos) << e.what();
  }
}

}  // namespace
