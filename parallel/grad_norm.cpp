#include "parallel/grad_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "parallel/optimizer_kernels.h"

#include <algorithm>
#include <cmath>

namespace hydra::parallel {

namespace {

// This rank's sum of squares, in fp64 so that adding the shards' parts loses nothing, with
// the slots split across tp counted whole and the replicated ones divided by the tp size (so
// that summing over tp counts them once); the tied copy left out.
at::Tensor local_sum_of_squares(const ZeroOptimizer& opt, const FlatLayout& layout, int tp_size) {
  const bool any_duplicate =
      std::any_of(layout.slots.begin(), layout.slots.end(), [](const ParamSlot& s) { return s.duplicate; });
  if (tp_size == 1 && !any_duplicate) {  // the common case: one sum over the shard
    // CUDA: one kernel and no fp64 copies of the shard (parallel/optimizer_kernels.h).
    if (at::Tensor fused = fused_sum_of_squares(opt.grad_shard); fused.defined()) return fused;
    return opt.grad_shard.to(at::kDouble).pow(2).sum().reshape({1});
  }
  // [0] over the slots split across tp (each tp rank holds a different slice), [1] over the
  // replicated ones (every tp rank holds the same values).
  at::Tensor sums = at::zeros({2}, opt.grad_shard.options().dtype(at::kDouble));
  for (size_t b = 0; b < opt.buckets.size(); ++b) {
    const ZeroBucket& bucket = opt.buckets[b];
    const at::Tensor mine = opt.grad_shard.narrow(0, bucket.local, bucket.owned.size());
    for (const SlotPiece& piece : pieces_in(layout, bucket.owned)) {
      const ParamSlot& slot = layout.slots[piece.slot];
      if (slot.duplicate) continue;
      const at::Tensor part = mine.narrow(0, slot.offset + piece.elements.begin - bucket.owned.begin, piece.elements.size());
      sums[slot.tp_split ? 0 : 1] += part.to(at::kDouble).pow(2).sum();
    }
  }
  return (sums[0] + sums[1] / tp_size).reshape({1});
}

}  // namespace

at::Tensor global_grad_norm_tensor(const ZeroOptimizer& opt, const FlatLayout& layout, Communicator* tp,
                                   Communicator* pp) {
  c10::NoGradGuard no_grad;
  const bool split_tp = tp && tp->size() > 1;
  at::Tensor sumsq = local_sum_of_squares(opt, layout, split_tp ? tp->size() : 1);
  if (split_tp) tp->all_reduce(sumsq, ReduceOp::kSum);
  // Stage 0: every dp rank holds the same all-reduced gradient; its local norm is the global one.
  if (opt.dp && opt.stage > 0) opt.dp->all_reduce(sumsq, ReduceOp::kSum);
  // Each pipeline stage holds different parameters.
  if (pp && pp->size() > 1) pp->all_reduce(sumsq, ReduceOp::kSum);
  return sumsq.sqrt_().reshape({});
}

at::Tensor global_grad_norm_tensor(const ZeroOptimizer& shards, const FlatLayout& layout, const ParallelContext& ctx) {
  return global_grad_norm_tensor(shards, layout, ctx.tp.get(), ctx.pp.get());
}

double global_grad_norm(const ZeroOptimizer& shards, const FlatLayout& layout, Communicator* tp, Communicator* pp) {
  return global_grad_norm_tensor(shards, layout, tp, pp).item<double>();
}

}  // namespace hydra::parallel
