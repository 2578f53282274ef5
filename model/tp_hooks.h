// What the model needs to know about tensor parallelism, and nothing more: the group's size
// and this rank's place in it (to size and slice its non-projection parameters by heads), and
// a few tensor functions that the parallel code supplies (parallel/tensor_parallel.h). The
// model never sees a communicator: these closures hold it. With size 1 every hook is empty
// and the model runs exactly as a single process.
//
// The tp region. Inside an attention or MLP sub-layer a rank computes only its heads (or its
// slice of the MLP width). A replicated tensor used there — the sub-layer input, a K/V head
// shared by all query heads, a norm weight shared by heads — therefore receives on each rank
// only the gradient its own heads send back: a partial sum. The model marks the two places
// where that matters:
//   - enter(x): the sub-layer input (identity forward, gradient summed over tp backward), one
//     all-reduce per sub-layer backward, as in Megatron;
//   - sum_grad(p): a replicated parameter inside the region gets its gradient summed over tp
//     (a gradient hook), so that every tp rank holds the same, complete gradient.
// The region ends at the row-parallel output projection (its all-reduce lives in the
// projection module the factory made).
#pragma once

#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

namespace hydra::model {

struct TensorParallelHooks {
  int size = 1;  // ranks in the tensor-parallel group
  int rank = 0;  // this rank within it
  // Identity forward; backward sums the gradient over the group.
  std::function<at::Tensor(const at::Tensor&)> enter;
  // Sums over the group forward (all-reduce); identity backward: partial values whose sum is
  // used replicated outside the region (vocab-parallel embedding).
  std::function<at::Tensor(const at::Tensor&)> reduce;
  // Sums over the group in both directions: per-rank partial values whose sum is used inside
  // the region (CCQA's qk-mean of a KV group whose query heads live on several ranks).
  std::function<at::Tensor(const at::Tensor&)> sum_partial;
  // Registers a hook that sums the gradient of a replicated in-region parameter over the group.
  std::function<void(at::Tensor&)> sum_grad;
  // Mean next-token cross entropy over vocabulary-sharded logits [B, S, V_local] (this rank's
  // columns start at vocab_begin); targets [B, S], -100 ignored. Never gathers the logits.
  // For callers that want the logits; training's loss alone takes the chunked head below.
  std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& targets, int64_t vocab_begin)> cross_entropy;
  // In-place maximum and sum over the group of small statistics, outside autograd: the chunked
  // vocabulary-parallel head and loss (linear_cross_entropy.h, VocabShard) meet its rows' so.
  std::function<void(at::Tensor&)> max_over_group;
  std::function<void(at::Tensor&)> sum_over_group;

  bool active() const { return size > 1; }
  at::Tensor enter_region(const at::Tensor& x) const { return active() ? enter(x) : x; }
};

}  // namespace hydra::model
