#include "data/loader.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/errors.h"

namespace hydra::data {
namespace {

using common::ConfigError;
using common::InputError;

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

Batch to_device(const Batch& batch, const at::Device& device) {
  return Batch{batch.inputs.to(device), batch.targets.to(device)};
}

void copy_batch(const Batch& host, Batch& device_batch) {
  auto copy = [](const at::Tensor& from, at::Tensor& to) {
    HYDRA_CHECK(from.sizes() == to.sizes(), "copy_batch: a batch of " << from.sizes() << " into buffers of " << to.sizes());
    if (!to.is_cuda()) {
      to.copy_(from);
      return;
    }
    // A copy from pageable memory would wait for the device; from pinned memory it is queued
    // (the caching host allocator keeps the pinned block until the copy has run).
    to.copy_(from.pin_memory(), /*non_blocking=*/true);
  };
  copy(host.inputs, device_batch.inputs);
  copy(host.targets, device_batch.targets);
}

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

Batch TrainData::micro_batch(const BatchSplit& split, int64_t consumed, int64_t micro) const {
  if (consumed < 0) HYDRA_FAIL(InputError, "data: consumed sample count " << consumed << " is negative");
  return samples(first_sample(split, consumed, micro), split.micro_batch);
}

// ---- ValData ----

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

Batch ValData::micro_batch(const BatchSplit& split, int64_t batch, int64_t micro) const {
  HYDRA_CHECK(batch >= 0, "validation batch " << batch);
  return samples(first_sample(split, batch * split.global_batch, micro), split.micro_batch);
}

int64_t validation_batches(const ValData& val, int64_t eval_batches, int64_t global_batch) {
  HYDRA_CHECK(eval_batches >= 1 && global_batch >= 1, "eval_batches " << eval_batches << ", global_batch " << global_batch);
  const int64_t whole = val.windows() / global_batch;
  if (whole < 1) {
    HYDRA_FAIL(InputError, val.dir() << ": the val split holds " << val.windows() << " windows of train.seq_len + 1 = "
                                     << val.seq_len() + 1 << " tokens, fewer than one global batch (train.global_batch "
                                     << global_batch << "); prepare the data with a larger --val-fraction, or lower "
                                     << "train.global_batch or train.seq_len");
  }
  return std::min(eval_batches, whole);
}

DataSource open_data_source(const DataConfig& config, int64_t seq_len, uint64_t seed) {
  DataSource source;
  source.dataset = std::make_shared<const TokenDataset>(config.path, config.tokenizer);
  source.train = std::make_shared<const TrainData>(source.dataset, seq_len, seed);
  source.val = std::make_shared<const ValData>(source.dataset, seq_len);
  return source;
}

}  // namespace hydra::data
