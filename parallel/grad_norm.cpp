#include "parallel/grad_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

namespace hydra::parallel {

at::Tensor global_grad_norm_tensor(const ZeroOptimizer& opt, const FlatLayout& layout, Communicator* tp,
                                   Communicator* pp) {
  c10::NoGradGuard no_grad;
  // Sums of squares in fp64 so that adding the shards' parts loses nothing: [0] over the
  // slots split across tp (each tp rank holds a different slice), [1] over the replicated
  // ones (every tp rank holds the same values: counted once).
  const bool split_tp = tp && tp->size() > 1;
  const bool any_duplicate =
      std::any_of(layout.slots.begin(), layout.slots.end(), [](const ParamSlot& s) { return s.duplicate; });
  at::Tensor sums = at::zeros({2}, opt.grad_shard.options().dtype(at::kDouble));
  if (!split_tp && !any_duplicate) {
    sums[1] = opt.grad_shard.to(at::kDouble).pow(2).sum();
  } else {
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
  }
  // One scalar: split parts summed over tp, replicated parts once (rep / tp summed tp times).
  at::Tensor sumsq = (sums[0] + sums[1] / (split_tp ? tp->size() : 1)).reshape({1});
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
