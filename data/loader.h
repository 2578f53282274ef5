// The one data path from token shards to batches (docs/DATA.md, "Loader"): what `hydra train`
// and `hydra eval` read.
//
// The train shards, in manifest order, are one token stream of N tokens; so are the val
// shards. A sample is a window of seq_len + 1 tokens starting at a multiple of seq_len
// (window w = tokens [w*T, w*T + T + 1), T = seq_len; W = (N - 1) / T windows), so every
// token but the first is a target exactly once per epoch and shard boundaries are
// invisible. Inputs are the first T tokens, targets the last T.
//
// Training: the order is a pure function of (seed, global sample index): sample g reads
// window SampleOrder(W, seed).window_of(g). The step that starts after C consumed samples
// reads the global batch [C, C + B), split over ranks and micro-batches by BatchSplit; the
// only state to checkpoint is C. Validation: the first n*B val windows in order, n whole
// global batches, split the same way; the same windows for every layout.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch_split.h"
#include "data/config.h"
#include "data/manifest.h"
#include "data/sample_order.h"
#include "data/shard.h"

namespace hydra::data {

struct Batch {
  at::Tensor inputs;   // int64 [rows, seq_len]
  at::Tensor targets;  // int64 [rows, seq_len]: inputs shifted left by one token
};

// The batch on `device` (the loader reads into CPU memory).
Batch to_device(const Batch& batch, const at::Device& device);

// Copies a host batch into `device_batch`'s tensors (same shapes), without waiting for the
// device: on CUDA through pinned memory, queued on the current stream behind the work already
// there. The training step's input buffers are filled this way (train/step_inputs.h).
void copy_batch(const Batch& host, Batch& device_batch);

enum class Split { kTrain, kVal };

// A dataset directory with its shards memory-mapped and validated.
class TokenDataset {
 public:
  // Reads dir/manifest.json and maps every shard it lists. A manifest tokenizer other
  // than expected_tokenizer is a ConfigError naming data.tokenizer ("" skips the check).
  // A missing shard, or one whose header disagrees with the manifest or its own size, is
  // an InputError naming the file.
  TokenDataset(const std::string& dir, const std::string& expected_tokenizer);

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  uint64_t tokens(Split split) const;
  // Copies tokens [begin, begin + count) of a split's stream, across shard boundaries.
  void read(Split split, uint64_t begin, uint64_t count, int64_t* out) const;

 private:
  struct Stream {
    std::vector<MappedShard> shards;
    std::vector<uint64_t> starts;  // stream offset of each shard's first token
    uint64_t tokens = 0;
  };
  const Stream& stream(Split split) const { return split == Split::kTrain ? train_ : val_; }

  std::string dir_;
  Manifest manifest_;
  Stream train_, val_;
};

// The training order: global samples as a pure function of (seed, sample index).
class TrainData {
 public:
  // The train stream must hold at least seq_len + 1 tokens (InputError otherwise).
  TrainData(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, uint64_t seed);

  int64_t seq_len() const { return seq_len_; }
  // Samples per epoch: the number of windows W.
  int64_t samples_per_epoch() const { return static_cast<int64_t>(order_.windows()); }
  // The window global sample `sample` reads (for tests and diagnostics).
  uint64_t window_of(int64_t sample) const;

  // Global samples [first, first + count), one row each.
  Batch samples(int64_t first, int64_t count) const;
  // Micro-batch `micro` of this rank's share of the step that starts after `consumed`
  // samples (the global batch [consumed, consumed + B)).
  Batch micro_batch(const BatchSplit& split, int64_t consumed, int64_t micro) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  SampleOrder order_;
};

// The validation windows in stream order: window w = val tokens [w*T, w*T + T + 1).
class ValData {
 public:
  ValData(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len);
  const std::string& dir() const { return dataset_->dir(); }
  int64_t seq_len() const { return seq_len_; }
  int64_t windows() const { return windows_; }
  // Windows [first, first + count), one row each; past the end is an InputError naming the
  // dataset (the val split is too small for that many rows).
  Batch samples(int64_t first, int64_t count) const;
  // Micro-batch `micro` of this rank's share of validation batch `batch`: the global batch
  // of windows [batch*B, (batch+1)*B).
  Batch micro_batch(const BatchSplit& split, int64_t batch, int64_t micro) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  int64_t windows_;
};

// How many validation batches a run evaluates: n = min(eval_batches, W / B) whole global
// batches, i.e. windows [0, n*B), each once (no wrap-around: a repeated window would count
// twice in the mean). Fewer than B windows is an InputError naming the dataset, its window
// count, train.seq_len and train.global_batch.
int64_t validation_batches(const ValData& val, int64_t eval_batches, int64_t global_batch);

// A run's data: data.path opened for training and validation.
struct DataSource {
  std::shared_ptr<const TokenDataset> dataset;
  std::shared_ptr<const TrainData> train;
  std::shared_ptr<const ValData> val;
};

// Opens config.path (InputError naming what is missing or corrupt; ConfigError when its
// tokenizer is not config.tokenizer).
DataSource open_data_source(const DataConfig& config, int64_t seq_len, uint64_t seed);

}  // namespace hydra::data
