// Where one rank's tensor of a parameter sits in the whole parameter (recorded by the model as it
// builds the parameter: model/sharding.h).
// Checkpoints store every tensor with this placement, so that a checkpoint written by one
// parallel layout is read by any other (docs/CHECKPOINT.md). Plain data: no LibTorch here.
#pragma once

#include <cstdint>
#include <vector>

namespace hydra::model {

struct ShardInfo {
  std::vector<int64_t> global_shape;  // the whole parameter (the vocabulary padded for this tp size)
  std::vector<int64_t> offset;        // where this rank's tensor starts in it, per dimension
  int split_dim = -1;                 // the dimension tensor parallelism splits; -1: held whole
  // Rows (dim 0) from this one on are vocabulary padding: never read by the model, never
  // stored, zero after a load. -1: the parameter has no padding.
  int64_t valid_rows = -1;
  // Whether this rank writes the parameter (and its optimizer state) into checkpoints: false
  // for the copies other ranks hold too (replicated parameters on tp ranks other than 0, the
  // tied embedding of the last pipeline stage), so that every part is stored once.
  bool primary = true;
};

}  // namespace hydra::model
