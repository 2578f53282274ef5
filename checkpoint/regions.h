// The geometry of resharding: which stored parts of a parameter overlap the part a rank needs,
// and how to copy the overlaps. Every stored tensor is a FlatPart of its whole parameter: a
// box of it (where this rank's tensor sits: origin and shape) and a flat element range of
// that box (all of it for a weight, this rank's ZeRO range for optimizer state). A rank's
// need is described the same way, so any tp split and any ZeRO range reads from any other.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/shard_info.h"

namespace hydra::checkpoint {

struct FlatPart {
  std::vector<int64_t> origin;  // where the box starts in the whole parameter, per dimension
  std::vector<int64_t> shape;   // the box
  int64_t begin = 0;            // its elements [begin, end), flattened row-major
  int64_t end = 0;
};

// The shape stored in checkpoints as `global_shape`: the whole parameter without its
// vocabulary padding (rows from valid_rows on), so that it is the same for every tp size.
std::vector<int64_t> stored_global_shape(const model::ShardInfo& shard);
// How many leading rows (dim 0) of a rank's tensor with `rows` rows lie before the padding.
int64_t stored_rows(const model::ShardInfo& shard, int64_t rows);
// The placement of a tensor held whole by one rank (no parallelism).
model::ShardInfo whole(const at::Tensor& tensor);

// Shapes as lists: a tensor's, their element count (of the dimensions from `from_dim` on),
// and as text ("[2, 3]").
std::vector<int64_t> shape_of(const at::Tensor& tensor);
int64_t element_count(const std::vector<int64_t>& shape, size_t from_dim = 0);
std::string shape_text(const std::vector<int64_t>& shape);

// Fills the flat range of `target` (one or more tensors of the same geometry, e.g. the
// master weights and both moments) from stored parts that overlap it. Elements outside the
// stored global shape (vocabulary padding of a larger tp size) read as zero and need no
// source; every other element must come from some part.
class PartAssembler {
 public:
  PartAssembler(const FlatPart& target, const std::vector<int64_t>& stored_global, int tensors, at::ScalarType dtype);
  // Whether `source` holds any element of the target's rows (a cheap test before reading it).
  bool overlaps(const FlatPart& source) const;
  // The part of `source` worth reading: `source` with its flat range narrowed to the elements
  // from the first to the last one that lies in the target's rows (a conservative contiguous
  // range: elements between them that the target does not need are included). Empty
  // (begin == end) when nothing overlaps.
  FlatPart needed(const FlatPart& source) const;
  // Copies the overlap; data[i] is the 1-D stored tensor i (end - begin elements). `source`
  // may be a sub-range of a stored part (needed()'s result) with just those elements.
  void add(const FlatPart& source, const std::vector<at::Tensor>& data);
  // Elements of the target range no source has provided yet.
  int64_t missing() const;
  // Tensor i's values for the target range, 1-D (end - begin elements).
  at::Tensor result(int i) const;

 private:
  FlatPart box_;   // the whole rows of the target box that its range touches
  int64_t skip_ = 0;  // where the target range starts in box_
  int64_t size_ = 0;
  std::vector<at::Tensor> values_;
  at::Tensor covered_;  // bool, box_.shape
};

}  // namespace hydra::checkpoint
