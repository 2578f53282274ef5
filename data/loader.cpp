#include "data/loader.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/errors.h"

namespace hydra::data {
namespace {

using common::ConfigError;
using common::InputError;

void check_dp(int dp_rank, int dp_size, int64_t global_batch) {
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    HYDRA_FAIL(ConfigError, "data: dp rank " << dp_rank << " of dp size " << dp_size << " is out of range");
  }
  if (global_batch < 1 || global_batch % dp_size != 0) {
    HYDRA_FAIL(ConfigError, "train.global_batch " << global_batch << " must be a positive multiple of parallel.dp "
                                                  << dp_size);
  }
}

// Rows of seq_len + 1 tokens from the given stream windows, split into inputs and targets.
Batch make_batch(const TokenDataset& dataset, Split split, int64_t seq_len, const std::vector<uint64_t>& windows) {
  const auto rows = static_cast<int64_t>(windows.size());
  Batch batch;
  batch.inputs = at::empty({rows, seq_len}, at::kLong);
  batch.targets = at::empty({rows, seq_len}, at::kLong);
  int64_t* in = batch.inputs.data_ptr<int64_t>();
  int64_t* tg = batch.targets.data_ptr<int64_t>();
  std::vector<int64_t> row(static_cast<size_t>(seq_len) + 1);
  for (int64_t i = 0; i < rows; ++i) {
    dataset.read(split, windows[i] * static_cast<uint64_t>(seq_len), row.size(), row.data());
    std::copy(row.begin(), row.end() - 1, in + i * seq_len);
    std::copy(row.begin() + 1, row.end(), tg + i * seq_len);
  }
  return batch;
}

uint64_t window_count(uint64_t tokens, int64_t seq_len) {
  return tokens < 2 ? 0 : (tokens - 1) / static_cast<uint64_t>(seq_len);
}

}  // namespace

// ---- TokenDataset ----

TokenDataset::TokenDataset(const std::string& dir, const std::string& expected_tokenizer)
    : dir_(dir), manifest_(read_manifest(dir)) {
  const std::string manifest_path = dir + "/" + kManifestName;
  if (!expected_tokenizer.empty() && manifest_.tokenizer != expected_tokenizer) {
    HYDRA_FAIL(ConfigError, "data.tokenizer is '" << expected_tokenizer << "' but " << manifest_path
                                                  << " was prepared with '" << manifest_.tokenizer
                                                  << "' (set data.tokenizer: " << manifest_.tokenizer
                                                  << ", or prepare the data again with --tokenizer "
                                                  << expected_tokenizer << ")");
  }
  if (manifest_.token_bytes != token_bytes_for(manifest_.vocab_size)) {
    HYDRA_FAIL(InputError, manifest_path << ": token_bytes " << manifest_.token_bytes << " does not fit vocab_size "
                                         << manifest_.vocab_size);
  }
  const auto open_stream = [&](const std::vector<ShardEntry>& entries, Stream& stream) {
    for (const ShardEntry& e : entries) {
      MappedShard shard(dir + "/" + e.file, manifest_.vocab_size);
      if (shard.size() != e.tokens) {
        HYDRA_FAIL(InputError, "shard " << shard.path() << ": holds " << shard.size() << " tokens but "
                                        << manifest_path << " says " << e.tokens);
      }
      stream.starts.push_back(stream.tokens);
      stream.tokens += shard.size();
      stream.shards.push_back(std::move(shard));
    }
  };
  open_stream(manifest_.train, train_);
  open_stream(manifest_.val, val_);
}

uint64_t TokenDataset::tokens(Split split) const { return stream(split).tokens; }

void TokenDataset::read(Split split, uint64_t begin, uint64_t count, int64_t* out) const {
  const Stream& s = stream(split);
  HYDRA_CHECK(begin + count <= s.tokens, "read past the end of the " << (split == Split::kTrain ? "train" : "val")
                                                                     << " stream of " << dir_);
  // The shard holding `begin`: the last one that starts at or before it.
  size_t k = static_cast<size_t>(std::upper_bound(s.starts.begin(), s.starts.end(), begin) - s.starts.begin()) - 1;
  while (count > 0) {
    const uint64_t offset = begin - s.starts[k];
    const uint64_t take = std::min(count, s.shards[k].size() - offset);
    s.shards[k].copy_to(offset, take, out);
    begin += take, out += take, count -= take;
    ++k;
  }
}

// ---- TrainData ----

// The training order over the train stream's windows; the stream must hold one window.
static SampleOrder train_order(const TokenDataset& dataset, int64_t seq_len, uint64_t seed) {
  if (seq_len < 1) HYDRA_FAIL(ConfigError, "train.seq_len " << seq_len << " must be positive");
  const uint64_t windows = window_count(dataset.tokens(Split::kTrain), seq_len);
  if (windows == 0) {
    HYDRA_FAIL(InputError, dataset.dir() << ": the train split has " << dataset.tokens(Split::kTrain)
                                         << " tokens, fewer than train.seq_len + 1 = " << seq_len + 1);
  }
  return SampleOrder(windows, seed);
}

TrainData::TrainData(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, uint64_t seed)
    : dataset_(std::move(dataset)), seq_len_(seq_len), order_(train_order(*dataset_, seq_len, seed)) {}

uint64_t TrainData::window_of(int64_t sample) const {
  HYDRA_CHECK(sample >= 0, "negative sample index " << sample);
  return order_.window_of(static_cast<uint64_t>(sample));
}

Batch TrainData::samples(int64_t first, int64_t count) const {
  HYDRA_CHECK(first >= 0 && count >= 0, "samples(" << first << ", " << count << ")");
  std::vector<uint64_t> windows(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) windows[i] = window_of(first + i);
  return make_batch(*dataset_, Split::kTrain, seq_len_, windows);
}

Batch TrainData::batch_at(int64_t consumed, int dp_rank, int dp_size, int64_t global_batch) const {
  check_dp(dp_rank, dp_size, global_batch);
  if (consumed < 0) HYDRA_FAIL(InputError, "data: consumed sample count " << consumed << " is negative");
  const int64_t rows = global_batch / dp_size;
  return samples(consumed + dp_rank * rows, rows);
}

// ---- TrainLoader ----

TrainLoader::TrainLoader(std::shared_ptr<const TrainData> data, int dp_rank, int dp_size, int64_t global_batch,
                         int64_t consumed)
    : data_(std::move(data)), dp_rank_(dp_rank), dp_size_(dp_size), global_batch_(global_batch), consumed_(0) {
  check_dp(dp_rank, dp_size, global_batch);
  set_consumed(consumed);
}

Batch TrainLoader::next_batch() {
  Batch b = data_->batch_at(consumed_, dp_rank_, dp_size_, global_batch_);
  consumed_ += global_batch_;
  return b;
}

void TrainLoader::set_consumed(int64_t consumed) {
  if (consumed < 0) HYDRA_FAIL(InputError, "data: consumed sample count " << consumed << " is negative");
  consumed_ = consumed;
}

// ---- ValData, ValIterator ----

ValData::ValData(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len)
    : dataset_(std::move(dataset)), seq_len_(seq_len) {
  if (seq_len < 1) HYDRA_FAIL(ConfigError, "train.seq_len " << seq_len << " must be positive");
  windows_ = static_cast<int64_t>(window_count(dataset_->tokens(Split::kVal), seq_len));
}

Batch ValData::samples(int64_t first, int64_t count) const {
  HYDRA_CHECK(first >= 0 && count >= 0, "val samples(" << first << ", " << count << ")");
  if (first + count > windows_) {
    HYDRA_FAIL(InputError, dataset_->dir() << ": the val split has " << windows_ << " windows of train.seq_len + 1 = "
                                           << seq_len_ + 1 << " tokens; rows " << first << ".." << first + count - 1
                                           << " were asked for (prepare a larger --val-fraction or evaluate fewer batches)");
  }
  std::vector<uint64_t> windows(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) windows[i] = static_cast<uint64_t>(first + i);
  return make_batch(*dataset_, Split::kVal, seq_len_, windows);
}

ValIterator::ValIterator(std::shared_ptr<const ValData> data, int dp_rank, int dp_size, int64_t global_batch,
                         int64_t max_batches)
    : data_(std::move(data)), global_batch_(global_batch) {
  check_dp(dp_rank, dp_size, global_batch);
  rows_ = global_batch / dp_size;
  first_row_ = dp_rank * rows_;
  batches_ = data_->windows() / global_batch;
  if (max_batches >= 0) batches_ = std::min(batches_, max_batches);
}

bool ValIterator::next(Batch& batch) {
  if (next_ >= batches_) return false;
  batch = data_->samples(next_ * global_batch_ + first_row_, rows_);
  ++next_;
  return true;
}

}  // namespace hydra::data
