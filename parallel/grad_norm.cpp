#include "parallel/grad_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "parallel/optimizer_kernels.h"

#include <algorithm>
#include <cmath>

namespace hydra::parallel {

namespace {

// The gradient this rank holds, as tensors in two groups: [0] the slots split across tp (each
// tp rank holds a different slice), [1] the replicated ones (every tp rank holds the same
// values); the tied copy left out. Without tp and duplicates, the whole shard in one piece.
struct GradPieces {
  std::vector<at::Tensor> split, replicated;
};

GradPieces grad_pieces(const ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params, int tp_size) {
  GradPieces out;
  if (opt.direct) {  // one rank: every slot whole, in the parameters' own .grad
    for (size_t s = 0; s < layout.slots.size(); ++s) {
      const ParamSlot& slot = layout.slots[s];
      const at::Tensor& grad = params[s].second.grad();
      if (slot.duplicate || !grad.defined()) continue;  // (no gradient reads as 0)
      (slot.tp_split || tp_size == 1 ? out.split : out.replicated).push_back(grad.reshape({-1}));
    }
    return out;
  }
  const bool any_duplicate =
      std::any_of(layout.slots.begin(), layout.slots.end(), [](const ParamSlot& s) { return s.duplicate; });
  if (tp_size == 1 && !any_duplicate) {
    out.split.push_back(opt.grad_shard);
    return out;
  }
  for (size_t b = 0; b < opt.buckets.size(); ++b) {
    const ZeroBucket& bucket = opt.buckets[b];
    const at::Tensor mine = opt.grad_shard.narrow(0, bucket.local, bucket.owned.size());
    for (const SlotPiece& piece : pieces_in(layout, bucket.owned)) {
      const ParamSlot& slot = layout.slots[piece.slot];
      if (slot.duplicate) continue;
      const at::Tensor part = mine.narrow(0, slot.offset + piece.elements.begin - bucket.owned.begin, piece.elements.size());
      (slot.tp_split || tp_size == 1 ? out.split : out.replicated).push_back(part);
    }
  }
  return out;
}

// sum(double(x)^2) over all of `xs` as an fp64 [1] tensor: one kernel pass over each (CUDA,
// parallel/optimizer_kernels.h) or the ATen formula; fp64 so that adding parts loses nothing.
at::Tensor sum_of_squares(const std::vector<at::Tensor>& xs, const at::TensorOptions& like) {
  if (at::Tensor fused = fused_sum_of_squares(xs); fused.defined()) return fused;
  at::Tensor sum = at::zeros({1}, like.dtype(at::kDouble));
  for (const at::Tensor& x : xs) sum += x.to(at::kDouble).pow(2).sum();
  return sum;
}

// This rank's sum of squares, the replicated slots divided by the tp size (so that summing
// over tp counts them once).
at::Tensor local_sum_of_squares(const ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params,
                                int tp_size) {
  const GradPieces pieces = grad_pieces(opt, layout, params, tp_size);
  const at::TensorOptions like = opt.states.empty() ? at::TensorOptions() : opt.states.front().master.options();
  at::Tensor sum = sum_of_squares(pieces.split, like);
  if (!pieces.replicated.empty()) sum = sum + sum_of_squares(pieces.replicated, like) / tp_size;
  return sum;
}

}  // namespace

at::Tensor global_grad_norm_tensor(const ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params,
                                   Communicator* tp, Communicator* pp) {
  c10::NoGradGuard no_grad;
  const bool split_tp = tp && tp->size() > 1;
  at::Tensor sumsq = local_sum_of_squares(opt, layout, params, split_tp ? tp->size() : 1);
  if (split_tp) tp->all_reduce(sumsq, ReduceOp::kSum);
  // Stage 0: every dp rank holds the same all-reduced gradient; its local norm is the global one.
  if (opt.dp && opt.stage > 0) opt.dp->all_reduce(sumsq, ReduceOp::kSum);
  // Each pipeline stage holds different parameters.
  if (pp && pp->size() > 1) pp->all_reduce(sumsq, ReduceOp::kSum);
  return sumsq.sqrt_().reshape({});
}

at::Tensor global_grad_norm_tensor(const ZeroOptimizer& shards, const FlatLayout& layout, const NamedParams& params,
                                   const ParallelContext& ctx) {
  return global_grad_norm_tensor(shards, layout, params, ctx.tp.get(), ctx.pp.get());
}

double global_grad_norm(const ZeroOptimizer& shards, const FlatLayout& layout, const NamedParams& params,
                        Communicator* tp, Communicator* pp) {
  return global_grad_norm_tensor(shards, layout, params, tp, pp).item<double>();
}

}  // namespace hydra::parallel
