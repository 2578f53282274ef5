// What the training loop reads: batches of next-token pairs by global sample index, from the
// token shards of `hydra data prepare` (data/). The sample order is a pure function of the
// seed and the index, so any rank, after any restart, reads the same sequences.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

#include "data/config.h"

namespace hydra::train {

struct Batch {
  at::Tensor inputs;   // int64 [B, seq_len] on the run's device
  at::Tensor targets;  // int64 [B, seq_len]: inputs shifted by one token
};

struct BatchSource {
  // Global samples [first, first + count) of the training order.
  std::function<Batch(int64_t first, int count, const at::TensorOptions& device)> train;
  // Validation batch `index` (fixed order, from the validation shards).
  std::function<Batch(int index, int count, const at::TensorOptions& device)> validation;
  int64_t vocab_size = 0;  // the manifest's
};

// Opens data.path (InputError naming what is missing or corrupt).
BatchSource open_batches(const data::DataConfig& config, int seq_len, int seed);

}  // namespace hydra::train
