// The flat parameter space the optimizer works in: every trainable parameter of this rank,
// in model order, laid end to end. Optimizer state (fp32 master weights, AdamW moments) and
// the gradients it steps on live in this space; ZeRO later gives each data-parallel rank a
// contiguous range of it (shard_range), and checkpoints translate ranges back to parameter
// names and offsets, so that state is never stored as anonymous ranges of a buffer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace hydra::parallel {

struct ParamSlot {
  std::string name;            // the model's parameter name ("blocks.0.layers.3.attn.wq")
  std::vector<int64_t> shape;  // this rank's tensor shape
  int64_t offset = 0;          // first element in the flat space
  int64_t numel = 0;
  bool decay = false;          // AdamW weight decay applies
  // Tensor parallelism: this rank holds a tp slice of the parameter (column/row-parallel
  // weights, vocab rows, per-head norms/convs/temperatures). The global gradient norm sums
  // the squares of split slots over the tp group and counts unsplit ones (identical on every
  // tp rank) once. Set by the trainer from the model's placements (model/sharding.h); false without tp.
  bool tp_split = false;
  // Pipeline parallelism with tied embeddings: the last stage holds a copy of embed.weight
  // (the first stage holds the original). Its gradient is summed with the original's before
  // the step, so both stay equal; the norm counts it once (here: not at all) and
  // checkpoints store the first stage's copy only. Set by the trainer.
  bool duplicate = false;
};

struct FlatLayout {
  std::vector<ParamSlot> slots;
  int64_t numel = 0;
};

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// docs/MODEL.md: weight decay on matrices and embeddings (tensors of 2+ dims), none on norms,
// biases, temperatures (1-dim) and routers (named "router").
bool decays(const std::string& name, const at::Tensor& param);

FlatLayout make_flat_layout(const NamedParams& params);

// The part of each slot that falls in [range.begin, range.end): (slot index, the slot's
// element range relative to its own start). Slots outside the range are left out.
struct SlotPiece {
  size_t slot = 0;
  Range elements;  // within the slot's flattened tensor
};
std::vector<SlotPiece> pieces_in(const FlatLayout& layout, const Range& range);

// Copies the flat range [range.begin, range.end) of every parameter's gradient (or value)
// into `out` (fp32, numel = range.size()), as `what` selects; a missing gradient reads as 0.
enum class Source { kGrad, kValue };
void gather_flat(const FlatLayout& layout, const NamedParams& params, const Range& range, Source what,
                 at::Tensor& out);
// Writes `flat` (fp32, numel = range.size()) into the parameters' values, cast to their dtype.
void scatter_flat(const FlatLayout& layout, const NamedParams& params, const Range& range,
                  const at::Tensor& flat);

}  // namespace hydra::parallel
