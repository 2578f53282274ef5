// Cached decoding of B sequences at once with preallocated caches (docs/MODEL.md "Decoding
// with caches", "Decoding a batch"). Each row is one sequence: a prompt's prefill (decode.h)
// is loaded into it, then every step takes one token of each row. The caches of every layer
// instance are [B, max_length, ...] tensors written in place (kv_cache.h's CacheRows), and
// routing is applied by masks: a MoD layer or MoR recursion runs on every row and keeps the
// result, and the cache entry, only of the rows its router chooses (the causal threshold rule,
// as decode.h). So a step's shapes depend only on B and on how far the longest row has got
// (rounded up to kSpanStep slots), and nothing is read back to the host until the logits: the
// step that a CUDA graph can capture. The logits equal those of decode_step on each row (to
// rounding), which equal the full forward's.
//
// Under tensor parallelism every rank of the group makes the same calls; each holds its heads'
// caches (decode.h).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "model/decode.h"
#include "model/kv_cache.h"

namespace hydra::model {

struct HydraModelImpl;

class DecodeBatch {
 public:
  // Attention reads the first `span` slots of each cache, span = the longest row's next length
  // rounded up to a multiple of kSpanStep (at most max_length): few distinct shapes, each of
  // them captured once, at a cost of at most kSpanStep - 1 masked slots a step.
  static constexpr int64_t kSpanStep = 64;

  // `rows` empty sequences of at most max_length tokens each (train.seq_len), on the model's
  // device. The caches are allocated as tokens first reach them.
  DecodeBatch(HydraModelImpl& model, int64_t rows, int64_t max_length);

  int64_t rows() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_length() const { return max_length_; }
  int64_t length(int64_t row) const { return lengths_.at(static_cast<size_t>(row)); }  // 0: nothing loaded

  // Row `row` continues from `state` (a prefill of this model): its caches are copied in and
  // whatever the row held is dropped.
  void load(int64_t row, const DecodeState& state);

  // One token for each row where active[row] (every row when `active` is empty); the other rows
  // are left as they are. Returns [B, V_padded]: row b the logits after its token (meaningless
  // for an inactive row). Every active row must hold a loaded sequence that is not full.
  torch::Tensor step(const std::vector<int64_t>& tokens, const std::vector<bool>& active = {});

  // step() in two halves, for a caller that captures the second in a CUDA graph
  // (train/decode_graphs.h). prepare() checks the rows, copies the tokens and flags into the
  // batch's input buffers, counts the tokens on the host and returns the span the step reads;
  // run(span) then queues the step's device work, which reads only those buffers and the caches
  // and writes only the caches and the positions, and returns the logits. Each prepare() must be
  // followed by one run() of the span it returned.
  int64_t prepare(const std::vector<int64_t>& tokens, const std::vector<bool>& active = {});
  torch::Tensor run(int64_t span);

  // The tokens held in the caches, summed over layer instances and rows (under MoD and MoR fewer
  // than the lengths times the layers), their bytes, and the bytes allocated. Read the device.
  int64_t cache_entries() const;
  int64_t cache_bytes() const;
  int64_t allocated_bytes() const;

 private:
  int64_t sum_over_caches(int64_t (*of)(const CacheRows&)) const;
  HydraModelImpl* model_;
  int64_t max_length_;
  std::vector<int64_t> lengths_;  // each row's tokens so far: its next position
  torch::Tensor positions_;       // [1, B] int64 on the model's device: lengths_, kept there
  torch::Tensor ids_;             // [1, B] int64: the step's tokens (prepare's copy)
  torch::Tensor write_;           // [B] bool: the step's active rows (prepare's copy)
  // caches_[block][recursion - 1][pattern position]
  std::vector<std::vector<std::vector<CacheRows>>> caches_;
};

}  // namespace hydra::model
