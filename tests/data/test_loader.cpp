// The loader: every window read exactly once per epoch in every layout; a step's samples and
// the validation windows the same for every dp / pp / micro-batch layout (the set a step or
// an evaluation averages over); the documented split of a global batch over ranks and
// micro-batches; the same batches after a restart at any step and with another layout;
// validation order and size; the errors for mismatched or too little data.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include "common/errors.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "parallel/process_grid.h"
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

// A layout of the trainer: dp x pp ranks (tp ranks read what their dp rank reads), each
// dp rank running micro-batches of `micro` rows of a global batch of `global` samples.
struct Layout {
  int dp, pp;
  int64_t micro;
};

// Every (dp rank, micro-batch) of one pipeline stage of `layout`, as a split and a micro index.
std::vector<std::pair<BatchSplit, int64_t>> micro_batches_of_stage(const Layout& layout, int64_t global, int stage) {
  const parallel::GridShape shape{layout.dp, 1, layout.pp};
  std::vector<std::pair<BatchSplit, int64_t>> out;
  for (int rank = 0; rank < shape.world(); ++rank) {
    const parallel::GridCoord coord = parallel::coord_of(shape, rank);
    if (coord.pp != stage) continue;
    const BatchSplit split = make_batch_split(global, layout.micro, layout.dp, coord.dp);
    for (int64_t m = 0; m < micro_batches(split); ++m) out.emplace_back(split, m);
  }
  return out;
}

std::vector<Layout> all_layouts() {
  std::vector<Layout> out;
  for (int dp : {1, 2, 4}) {
    for (int pp : {1, 2}) {
      for (int64_t micro : {1, 2, 4}) out.push_back({dp, pp, micro});
    }
  }
  return out;
}

// The windows a whole layout reads for one training step (every stage alike), sorted.
std::vector<int64_t> step_windows(const TrainData& data, const Layout& layout, int64_t global, int64_t consumed,
                                  int stage = 0) {
  std::vector<int64_t> windows;
  for (const auto& [split, m] : micro_batches_of_stage(layout, global, stage)) {
    const Batch b = data.micro_batch(split, consumed, m);
    EXPECT_EQ(b.inputs.size(0), layout.micro);
    for (int64_t i = 0; i < b.inputs.size(0); ++i) windows.push_back(window_of_row(b, i));
  }
  std::sort(windows.begin(), windows.end());
  return windows;
}

// 401 train tokens in three shards: 50 windows, some across shard boundaries; 401 val
// tokens in two: 50 windows.
class DataLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    make_dataset(dir, {150, 150, 101}, {200, 201});
    dataset = std::make_shared<TokenDataset>(dir.path(), "gpt2");
    data = std::make_shared<TrainData>(dataset, kSeqLen, /*seed=*/1234);
  }
  ScratchDir dir;
  std::shared_ptr<TokenDataset> dataset;
  std::shared_ptr<TrainData> data;
};

// The documented split (docs/DATA.md): micro-batch m of dp rank r holds rows
// [(m*D + r)*M, (m*D + r + 1)*M) of the global batch, sample consumed + row.
TEST_F(DataLoaderTest, EveryWindowOncePerEpochInEveryLayout) {
  ASSERT_EQ(data->samples_per_epoch(), 50);
  constexpr int64_t kBatch = 8;
  std::map<std::pair<int, int64_t>, std::map<int64_t, int64_t>> sample_to_window;  // per (dp, micro)
  for (int dp : {1, 2, 4}) {
    for (int64_t micro : {1, 2}) {
      auto& seen = sample_to_window[{dp, micro}];
      for (int step = 0; step < 13; ++step) {  // 104 samples: two epochs and a bit
        for (int r = 0; r < dp; ++r) {
          const BatchSplit split = make_batch_split(kBatch, micro, dp, r);
          ASSERT_EQ(micro_batches(split), kBatch / dp / micro);
          for (int64_t m = 0; m < micro_batches(split); ++m) {
            const Batch b = data->micro_batch(split, step * kBatch, m);
            ASSERT_EQ(b.inputs.sizes(), (at::IntArrayRef{micro, kSeqLen}));
            ASSERT_EQ(b.inputs.scalar_type(), at::kLong);
            for (int64_t i = 0; i < micro; ++i) {
              const int64_t sample = step * kBatch + (m * dp + r) * micro + i;
              ASSERT_FALSE(seen.count(sample)) << "sample " << sample << " read twice";
              seen[sample] = window_of_row(b, i);
            }
          }
        }
      }
      for (int epoch = 0; epoch < 2; ++epoch) {
        std::set<int64_t> windows;
        for (int64_t s = epoch * 50; s < (epoch + 1) * 50; ++s) windows.insert(seen.at(s));
        EXPECT_EQ(windows.size(), 50u) << "dp " << dp << " micro " << micro << " epoch " << epoch;
        EXPECT_EQ(*windows.begin(), 0);
        EXPECT_EQ(*windows.rbegin(), 49);
      }
      for (const auto& [sample, window] : seen) EXPECT_EQ(static_cast<uint64_t>(window), data->window_of(sample));
    }
  }
  for (const auto& [layout, map] : sample_to_window) EXPECT_EQ(map, sample_to_window.at({1, 1}));
}

// What a step averages over, and what an evaluation averages over, is one set of windows
// whatever the layout: the step's global batch [consumed, consumed + B) of the sample order
// (the reference: SampleOrder itself), and the first n*B val windows, each once.
TEST_F(DataLoaderTest, StepSamplesAndValidationWindowsAreTheSameForEveryLayout) {
  constexpr int64_t kBatch = 16;
  const SampleOrder order(50, 1234);
  for (int64_t consumed : {0, 16, 48, 1000}) {  // 48: the batch crosses into the second epoch
    std::vector<int64_t> want;
    for (int64_t i = 0; i < kBatch; ++i) want.push_back(static_cast<int64_t>(order.window_of(consumed + i)));
    std::sort(want.begin(), want.end());
    for (const Layout& layout : all_layouts()) {
      for (int stage = 0; stage < layout.pp; ++stage) {
        EXPECT_EQ(step_windows(*data, layout, kBatch, consumed, stage), want)
            << "dp " << layout.dp << " pp " << layout.pp << " micro " << layout.micro << " stage " << stage
            << " consumed " << consumed;
      }
    }
  }
  const ValData val(dataset, kSeqLen);
  ASSERT_EQ(val.windows(), 50);  // (401 - 1) / 8
  for (int64_t eval_batches : {1, 2, 3, 100}) {
    const int64_t n = validation_batches(val, eval_batches, kBatch);
    EXPECT_EQ(n, std::min<int64_t>(eval_batches, 3)) << "50 windows hold 3 whole batches of 16";
    std::vector<int64_t> want(static_cast<size_t>(n * kBatch));
    std::iota(want.begin(), want.end(), 0);
    for (const Layout& layout : all_layouts()) {
      for (int stage = 0; stage < layout.pp; ++stage) {
        std::vector<int64_t> got;
        for (int64_t j = 0; j < n; ++j) {
          for (const auto& [split, m] : micro_batches_of_stage(layout, kBatch, stage)) {
            const Batch b = val.micro_batch(split, j, m);
            for (int64_t i = 0; i < b.inputs.size(0); ++i) got.push_back(window_of_row(b, i));
          }
        }
        std::sort(got.begin(), got.end());
        EXPECT_EQ(got, want) << "eval_batches " << eval_batches << " dp " << layout.dp << " pp " << layout.pp
                             << " micro " << layout.micro << " stage " << stage;
      }
    }
  }
}

TEST_F(DataLoaderTest, RestartAtAnyStepReadsWhatAnUninterruptedRunRead) {
  constexpr int64_t kBatch = 8;
  const Layout layout{2, 1, 2};
  std::vector<std::vector<at::Tensor>> run(15);  // [step][rank * micro-batches + micro]
  for (int step = 0; step < 15; ++step) {
    for (const auto& [split, m] : micro_batches_of_stage(layout, kBatch, 0)) {
      run[step].push_back(data->micro_batch(split, step * kBatch, m).inputs);
    }
  }
  for (int step = 0; step < 15; ++step) {
    const int64_t consumed = step * kBatch;  // as if restarted from a checkpoint taken after `step` steps
    const TrainData restarted(std::make_shared<TokenDataset>(dir.path(), "gpt2"), kSeqLen, 1234);
    size_t k = 0;
    for (const auto& [split, m] : micro_batches_of_stage(layout, kBatch, 0)) {
      const Batch again = restarted.micro_batch(split, consumed, m);
      EXPECT_TRUE(at::equal(again.inputs, run[step][k++])) << "step " << step;
      EXPECT_TRUE(at::equal(again.targets, again.inputs + 1));
    }
    // Resumed on another layout (dp 4, one row per micro-batch): the same samples.
    EXPECT_EQ(step_windows(restarted, {4, 1, 1}, kBatch, consumed), step_windows(*data, layout, kBatch, consumed))
        << "step " << step;
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

TEST(DataLoader, ValidationWindowsInOrderSplitLikeTraining) {
  ScratchDir small_dir;
  make_dataset(small_dir, {150}, {40, 33});
  const ValData val(std::make_shared<TokenDataset>(small_dir.path(), "gpt2"), kSeqLen);
  EXPECT_EQ(val.windows(), 9);  // 73 tokens: (73 - 1) / 8
  const Batch all = val.samples(0, 9);
  for (int64_t w = 0; w < 9; ++w) EXPECT_EQ(window_of_row(all, w), w);  // crosses the shard boundary at 40
  EXPECT_EQ(validation_batches(val, 8, 4), 2);  // the ninth window would be a partial batch: never read
  EXPECT_EQ(validation_batches(val, 1, 4), 1);
  EXPECT_EQ(validation_batches(val, 3, 3), 3);
  for (int dp : {1, 2, 4}) {
    for (int64_t micro : {1, 4 / dp}) {
      for (int r = 0; r < dp; ++r) {
        const BatchSplit split = make_batch_split(4, micro, dp, r);
        for (int64_t j = 0; j < 2; ++j) {
          for (int64_t m = 0; m < micro_batches(split); ++m) {
            const int64_t row = 4 * j + (m * dp + r) * micro;
            EXPECT_TRUE(at::equal(val.micro_batch(split, j, m).inputs, all.inputs.slice(0, row, row + micro)))
                << "dp " << dp << " rank " << r << " micro " << micro << " batch " << j << " micro-batch " << m;
          }
        }
      }
    }
  }
  const auto message_of = [](const auto& f) {
    try {
      f();
    } catch (const common::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no InputError");
  };
  const std::string past_end = message_of([&] { val.samples(8, 2); });
  EXPECT_NE(past_end.find("val split has 9 windows"), std::string::npos) << past_end;
  // Fewer windows than one global batch: nothing whole to evaluate (no wrap-around).
  const std::string too_small = message_of([&] { validation_batches(val, 1, 16); });
  EXPECT_NE(too_small.find(small_dir.path()), std::string::npos) << too_small;
  EXPECT_NE(too_small.find("holds 9 windows"), std::string::npos) << too_small;
  EXPECT_NE(too_small.find("train.global_batch 16"), std::string::npos) << too_small;
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
  const auto config_message = [](int64_t global, int64_t micro, int dp) {
    try {
      make_batch_split(global, micro, dp, 0);
    } catch (const common::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };
  EXPECT_NE(config_message(6, 1, 4).find("train.global_batch 6"), std::string::npos) << config_message(6, 1, 4);
  EXPECT_NE(config_message(8, 3, 4).find("train.micro_batch 3"), std::string::npos) << config_message(8, 3, 4);
  EXPECT_NE(config_message(8, 0, 1).find("train.micro_batch 0"), std::string::npos) << config_message(8, 0, 1);
  EXPECT_THROW(make_batch_split(8, 1, 4, 4), common::RuntimeFailure);  // rank 4 of 4: a bug, not a config
  EXPECT_THROW(first_sample(make_batch_split(8, 2, 2, 0), 0, 2), common::RuntimeFailure);  // 2 micro-batches
  EXPECT_NO_THROW(make_batch_split(8, 2, 4, 3));
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
  const DataSource source = open_data_source({out.path(), "bytes"}, 64, 7);
  EXPECT_EQ(source.dataset->manifest().vocab_size, 256);
  const Batch b = source.train->samples(0, 16);
  for (int64_t row = 0; row < 16; ++row) {
    std::string s;
    for (int64_t t = 0; t < 64; ++t) s += static_cast<char>(b.inputs[row][t].item<int64_t>());
    s += static_cast<char>(b.targets[row][63].item<int64_t>());
    EXPECT_TRUE(s.find('\0') != std::string::npos || text.find(s) != std::string::npos) << s;
    EXPECT_TRUE(at::equal(b.inputs[row].slice(0, 1), b.targets[row].slice(0, 0, 63)));
  }
  EXPECT_GT(source.val->windows(), 0);
  EXPECT_THROW(open_data_source({out.path(), "gpt2"}, 64, 7), common::ConfigError);
}

}  // namespace
}  // namespace hydra::data
