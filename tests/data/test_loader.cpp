// The loader: every window read exactly once per epoch across data-parallel ranks (dp 1, 2,
// 4), the same batches after a restart at any step and with another dp size, the dp ranks'
// rows forming the global batch, validation order, and the errors for mismatched data.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <set>

#include "common/errors.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data_test_util.h"

namespace hydra::data {
namespace {

using testing::ScratchDir;

constexpr int64_t kSeqLen = 8;
constexpr int32_t kVocab = 50257;

// A dataset whose stream token at position i is i (train and val alike), in shards of the
// given sizes, so that a row tells which window it is.
std::string make_dataset(const ScratchDir& dir, const std::vector<uint64_t>& train_sizes,
                         const std::vector<uint64_t>& val_sizes, const std::string& tokenizer = "gpt2") {
  Manifest m;
  m.tokenizer = tokenizer;
  m.vocab_size = kVocab;
  m.eot_id = kVocab - 1;
  m.token_bytes = 2;
  const auto write = [&](const std::string& prefix, const std::vector<uint64_t>& sizes, std::vector<ShardEntry>& out) {
    int32_t next = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      const std::string name = prefix + "_" + std::to_string(k) + ".bin";
      std::vector<int32_t> tokens(sizes[k]);
      for (auto& t : tokens) t = next++;
      ShardWriter w(dir / name, kVocab);
      w.append(tokens.data(), tokens.size());
      w.close();
      w.rename();
      out.push_back({name, sizes[k]});
    }
  };
  write("train", train_sizes, m.train);
  write("val", val_sizes, m.val);
  write_manifest(dir.path(), m);
  return dir.path();
}

// The window a row of such a dataset is, after checking that it is a whole window.
int64_t window_of_row(const Batch& b, int64_t row) {
  const auto in = b.inputs[row], tg = b.targets[row];
  const int64_t first = in[0].item<int64_t>();
  EXPECT_EQ(first % kSeqLen, 0) << "rows start at multiples of seq_len";
  EXPECT_TRUE(at::equal(in, at::arange(first, first + kSeqLen, at::kLong)));
  EXPECT_TRUE(at::equal(tg, in + 1));
  return first / kSeqLen;
}

// 401 train tokens in three shards: 50 windows, some across shard boundaries.
class DataLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    make_dataset(dir, {150, 150, 101}, {40, 33});
    dataset = std::make_shared<TokenDataset>(dir.path(), "gpt2");
    data = std::make_shared<TrainData>(dataset, kSeqLen, /*seed=*/1234);
  }
  ScratchDir dir;
  std::shared_ptr<TokenDataset> dataset;
  std::shared_ptr<TrainData> data;
};

TEST_F(DataLoaderTest, EveryWindowOncePerEpochAcrossDpRanks) {
  ASSERT_EQ(data->samples_per_epoch(), 50);
  constexpr int64_t kBatch = 8;
  std::map<int, std::map<int64_t, int64_t>> sample_to_window;  // per dp size
  for (int dp : {1, 2, 4}) {
    std::vector<TrainLoader> loaders;
    for (int r = 0; r < dp; ++r) loaders.emplace_back(data, r, dp, kBatch);
    for (int step = 0; step < 13; ++step) {  // 104 samples: two epochs and a bit
      for (int r = 0; r < dp; ++r) {
        const Batch b = loaders[r].next_batch();
        ASSERT_EQ(b.inputs.sizes(), (at::IntArrayRef{kBatch / dp, kSeqLen}));
        ASSERT_EQ(b.inputs.scalar_type(), at::kLong);
        for (int64_t i = 0; i < kBatch / dp; ++i) {
          const int64_t sample = step * kBatch + r * (kBatch / dp) + i;
          ASSERT_FALSE(sample_to_window[dp].count(sample)) << "sample " << sample << " read twice";
          sample_to_window[dp][sample] = window_of_row(b, i);
        }
      }
    }
    for (int epoch = 0; epoch < 2; ++epoch) {
      std::set<int64_t> windows;
      for (int64_t s = epoch * 50; s < (epoch + 1) * 50; ++s) windows.insert(sample_to_window[dp].at(s));
      EXPECT_EQ(windows.size(), 50u) << "dp " << dp << " epoch " << epoch;
      EXPECT_EQ(*windows.begin(), 0);
      EXPECT_EQ(*windows.rbegin(), 49);
    }
    for (const auto& [sample, window] : sample_to_window[dp]) {
      EXPECT_EQ(static_cast<uint64_t>(window), data->window_of(sample));
    }
  }
  EXPECT_EQ(sample_to_window[1], sample_to_window[2]);
  EXPECT_EQ(sample_to_window[1], sample_to_window[4]);
}

TEST_F(DataLoaderTest, UnionOverDpRanksIsTheGlobalBatch) {
  for (int64_t consumed : {0, 8, 48, 96, 1000}) {
    const Batch global = data->batch_at(consumed, 0, 1, 8);
    for (int dp : {2, 4, 8}) {
      std::vector<at::Tensor> inputs, targets;
      for (int r = 0; r < dp; ++r) {
        const Batch b = data->batch_at(consumed, r, dp, 8);
        inputs.push_back(b.inputs);
        targets.push_back(b.targets);
      }
      EXPECT_TRUE(at::equal(at::cat(inputs), global.inputs)) << "dp " << dp << " consumed " << consumed;
      EXPECT_TRUE(at::equal(at::cat(targets), global.targets)) << "dp " << dp << " consumed " << consumed;
    }
  }
}

TEST_F(DataLoaderTest, RestartAtAnyStepReadsWhatAnUninterruptedRunRead) {
  constexpr int64_t kBatch = 8;
  constexpr int kDp = 2;
  std::vector<std::vector<Batch>> run(kDp);  // [rank][step]
  for (int r = 0; r < kDp; ++r) {
    TrainLoader loader(data, r, kDp, kBatch);
    for (int step = 0; step < 15; ++step) run[r].push_back(loader.next_batch());
    EXPECT_EQ(loader.consumed(), 15 * kBatch);
  }
  for (int step = 0; step < 15; ++step) {
    const int64_t consumed = step * kBatch;
    // The same dp size, as if restarted from a checkpoint taken after `step` steps.
    for (int r = 0; r < kDp; ++r) {
      TrainData restarted_data(std::make_shared<TokenDataset>(dir.path(), "gpt2"), kSeqLen, 1234);
      const Batch again = restarted_data.batch_at(consumed, r, kDp, kBatch);
      EXPECT_TRUE(at::equal(again.inputs, run[r][step].inputs)) << "rank " << r << " step " << step;
      EXPECT_TRUE(at::equal(again.targets, run[r][step].targets)) << "rank " << r << " step " << step;
      TrainLoader resumed(data, r, kDp, kBatch);
      resumed.set_consumed(consumed);
      EXPECT_TRUE(at::equal(resumed.next_batch().inputs, run[r][step].inputs));
    }
    // Resumed with dp 4: its four ranks read the rows the two ranks read.
    std::vector<at::Tensor> wide;
    for (int r = 0; r < 4; ++r) wide.push_back(TrainLoader(data, r, 4, kBatch, consumed).next_batch().inputs);
    EXPECT_TRUE(at::equal(at::cat(wide), at::cat({run[0][step].inputs, run[1][step].inputs}))) << "step " << step;
  }
}

TEST(DataSampleOrder, EachEpochIsAPermutationThatDependsOnSeedAndEpoch) {
  for (uint64_t windows : {1, 2, 3, 4, 5, 7, 16, 17, 100, 255, 256, 257, 1000, 4097}) {
    const SampleOrder order(windows, 42);
    for (uint64_t epoch = 0; epoch < 3; ++epoch) {
      std::vector<bool> seen(windows, false);
      for (uint64_t i = 0; i < windows; ++i) {
        const uint64_t w = order.window_of(epoch * windows + i);
        ASSERT_LT(w, windows);
        ASSERT_FALSE(seen[w]) << windows << " windows: " << w << " twice in epoch " << epoch;
        seen[w] = true;
      }
    }
  }
  const auto first = [](uint64_t seed, uint64_t epoch) {
    const SampleOrder order(1000, seed);
    std::vector<uint64_t> v;
    for (uint64_t i = 0; i < 20; ++i) v.push_back(order.permute(epoch, i));
    return v;
  };
  EXPECT_NE(first(1, 0), first(1, 1));
  EXPECT_NE(first(1, 0), first(2, 0));
  EXPECT_EQ(first(1, 0), first(1, 0));
  std::vector<uint64_t> identity(20);
  for (uint64_t i = 0; i < 20; ++i) identity[i] = i;
  EXPECT_NE(first(1, 0), identity);
  // Large epochs cost nothing up front.
  const SampleOrder big(uint64_t{3} << 40, 7);
  EXPECT_LT(big.window_of((uint64_t{3} << 40) * 5 + 12345), uint64_t{3} << 40);
}

TEST_F(DataLoaderTest, ValidationWindowsInOrderAndTheSameForEveryDpSize) {
  const auto val = std::make_shared<ValData>(dataset, kSeqLen);
  EXPECT_EQ(val->windows(), 9);  // 73 tokens: (73 - 1) / 8
  const Batch all = val->samples(0, 9);
  for (int64_t w = 0; w < 9; ++w) EXPECT_EQ(window_of_row(all, w), w);  // crosses the shard boundary at 40
  for (int dp : {1, 2, 4}) {
    std::vector<at::Tensor> rows;
    for (int r = 0; r < dp; ++r) {
      ValIterator it(val, r, dp, 4);
      EXPECT_EQ(it.batches(), 2);  // the ninth window is a partial batch
      Batch b;
      std::vector<at::Tensor> mine;
      while (it.next(b)) mine.push_back(b.inputs);
      EXPECT_EQ(mine.size(), 2u);
      for (size_t j = 0; j < mine.size(); ++j) {
        EXPECT_TRUE(at::equal(mine[j], all.inputs.slice(0, 4 * j + r * (4 / dp), 4 * j + (r + 1) * (4 / dp))));
      }
    }
  }
  EXPECT_EQ(ValIterator(val, 0, 1, 4, /*max_batches=*/1).batches(), 1);
  const std::string msg = [&] {
    try {
      val->samples(8, 2);
    } catch (const common::InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_NE(msg.find("val split has 9 windows"), std::string::npos) << msg;
}

TEST(DataLoader, TokenizerMismatchIsAConfigErrorNamingDataTokenizer) {
  ScratchDir dir;
  make_dataset(dir, {100}, {});
  try {
    TokenDataset d(dir.path(), "bytes");
    FAIL() << "expected ConfigError";
  } catch (const common::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.tokenizer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'gpt2'"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(TokenDataset(dir.path(), ""));
}

TEST(DataLoader, ShardsThatDisagreeWithTheManifestAreInputErrorsNamingTheFile) {
  const auto message = [](const std::string& dir) {
    try {
      TokenDataset d(dir, "gpt2");
    } catch (const common::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no InputError");
  };
  {
    ScratchDir dir;
    make_dataset(dir, {100, 50}, {10});
    std::filesystem::remove(dir / "train_1.bin");
    EXPECT_NE(message(dir.path()).find(dir / "train_1.bin"), std::string::npos) << message(dir.path());
  }
  {
    ScratchDir dir;
    make_dataset(dir, {100, 50}, {10});
    std::filesystem::resize_file(dir / "val_0.bin", kShardHeaderBytes + 2 * 9);
    const std::string msg = message(dir.path());
    EXPECT_NE(msg.find(dir / "val_0.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  }
  {
    ScratchDir dir;
    make_dataset(dir, {100}, {});
    Manifest m = read_manifest(dir.path());
    m.train[0].tokens = 99;
    write_manifest(dir.path(), m);
    const std::string msg = message(dir.path());
    EXPECT_NE(msg.find(dir / "train_0.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("says 99"), std::string::npos) << msg;
  }
}

TEST(DataLoader, RejectsTooLittleDataAndIndivisibleBatches) {
  ScratchDir dir;
  make_dataset(dir, {8}, {});
  auto dataset = std::make_shared<TokenDataset>(dir.path(), "gpt2");
  EXPECT_THROW(TrainData(dataset, 8, 1), common::InputError);  // 8 tokens, a window needs 9
  TrainData data(dataset, 7, 1);
  EXPECT_EQ(data.samples_per_epoch(), 1);
  try {
    data.batch_at(0, 0, 4, 6);
    FAIL() << "expected ConfigError";
  } catch (const common::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.global_batch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(data.batch_at(0, 4, 4, 8), common::ConfigError);
}

TEST(DataLoader, ReadsWhatPrepareWrote) {
  ScratchDir in, out;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "sentence number " + std::to_string(i) + ". ";
  testing::write_file(in / "a.txt", text);
  PrepareOptions o;
  o.inputs = {in.path()};
  o.output_dir = out.path();
  o.tokenizer = "bytes";
  o.val_fraction = 0.01;
  o.shard_tokens = 10000;  // several shards
  o.progress = false;
  prepare_corpus(o);
  const auto dataset = std::make_shared<TokenDataset>(out.path(), "bytes");
  EXPECT_EQ(dataset->manifest().vocab_size, 256);
  const TrainData data(dataset, 64, 7);
  const Batch b = data.batch_at(0, 0, 1, 16);
  for (int64_t row = 0; row < 16; ++row) {
    std::string s;
    for (int64_t t = 0; t < 64; ++t) s += static_cast<char>(b.inputs[row][t].item<int64_t>());
    s += static_cast<char>(b.targets[row][63].item<int64_t>());
    EXPECT_TRUE(s.find('\0') != std::string::npos || text.find(s) != std::string::npos) << s;
    EXPECT_TRUE(at::equal(b.inputs[row].slice(0, 1), b.targets[row].slice(0, 0, 63)));
  }
  EXPECT_GT(ValData(dataset, 64).windows(), 0);
}

}  // namespace
}  // namespace hydra::data
