// The training and validation data of a prepared dataset (docs/DATA.md, "Loader").
//
// The train shards, in manifest order, are one token stream of N tokens; so are the val
// shards. A sample is a window of seq_len + 1 tokens starting at a multiple of seq_len
// (window w = tokens [w*T, w*T + T + 1), T = seq_len; W = (N - 1) / T windows), so every
// token but the first is a target exactly once per epoch and shard boundaries are
// invisible. Inputs are the first T tokens, targets the last T.
//
// The training order is a pure function of (seed, global sample index): sample g reads
// window SampleOrder(W, seed).window_of(g). A step that has consumed C samples reads the
// global batch [C, C + B); data-parallel rank r of D reads [C + r*B/D, C + (r+1)*B/D). The
// sequence of samples therefore does not depend on D: a run resumed with another dp size
// continues with sample C, skipping and repeating nothing. The only state to checkpoint is C.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/manifest.h"
#include "data/sample_order.h"
#include "data/shard.h"

namespace hydra::data {

struct Batch {
  at::Tensor inputs;   // int64 [rows, seq_len]
  at::Tensor targets;  // int64 [rows, seq_len]: inputs shifted left by one token
};

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

// Training batches as a pure function of (seed, consumed samples, dp rank, dp size).
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
  // dp rank's share of the global batch of a step that starts after `consumed` samples:
  // rows [consumed + rank*B/D, consumed + (rank+1)*B/D). B must be divisible by D
  // (ConfigError naming train.global_batch otherwise).
  Batch batch_at(int64_t consumed, int dp_rank, int dp_size, int64_t global_batch) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  SampleOrder order_;
};

// A cursor over TrainData for the training loop: next_batch() returns batch_at(consumed)
// and advances consumed by the global batch. Checkpoint consumed(); restore it with
// set_consumed() (any dp size).
class TrainLoader {
 public:
  TrainLoader(std::shared_ptr<const TrainData> data, int dp_rank, int dp_size, int64_t global_batch,
              int64_t consumed = 0);
  Batch next_batch();
  int64_t consumed() const { return consumed_; }
  void set_consumed(int64_t consumed);

 private:
  std::shared_ptr<const TrainData> data_;
  int dp_rank_, dp_size_;
  int64_t global_batch_;
  int64_t consumed_;
};

// The validation windows in stream order: window w = val tokens [w*T, w*T + T + 1).
class ValData {
 public:
  ValData(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len);
  int64_t windows() const { return windows_; }
  // Windows [first, first + count), one row each; past the end is an InputError naming the
  // dataset (the val split is too small for that many rows).
  Batch samples(int64_t first, int64_t count) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  int64_t windows_;
};

// Validation in full global batches: batch j is windows [j*B, (j+1)*B), rank r of D taking
// its B/D rows as in training. A trailing partial batch is not evaluated, so every dp size
// sees the same windows. At most max_batches batches when max_batches >= 0.
class ValIterator {
 public:
  ValIterator(std::shared_ptr<const ValData> data, int dp_rank, int dp_size, int64_t global_batch,
              int64_t max_batches = -1);
  int64_t batches() const { return batches_; }
  // Fills batch and returns true, or returns false after the last batch.
  bool next(Batch& batch);
  void reset() { next_ = 0; }

 private:
  std::shared_ptr<const ValData> data_;
  int64_t rows_, first_row_;  // this rank's rows per batch and offset in the global batch
  int64_t global_batch_;
  int64_t batches_;
  int64_t next_ = 0;
};

}  // namespace hydra::data
