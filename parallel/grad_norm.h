// The global gradient norm: the L2 norm of the whole averaged gradient of the model, over
// every axis that splits it (dp shards, tp slices, pipeline stages). A function of where the
// gradient lives and of the process groups, not of any one optimizer.
#pragma once

#include "parallel/communicator.h"
#include "parallel/flat_layout.h"
#include "parallel/parallel_context.h"
#include "parallel/zero_optimizer.h"

namespace hydra::parallel {

// The local sum of squares of `shards.grad_shard` (with one rank, of the parameters' .grad:
// ZeroOptimizer::direct; a parameter without a gradient counts as 0), summed over dp (ZeRO stages 1-2; each
// element is owned by exactly one rank, so none counts twice) and, with `tp` of more than one
// rank, over tp for the slots split across it (ParamSlot::tp_split) while replicated slots
// count once. Collective over tp (if split) and over dp at stages 1-2; the result is the
// same on every rank, so a non-finite norm makes every rank skip (or halt on) the same step.
// With `pp` of more than one stage, the stages' sums are added (collective over pp), and
// slots marked ParamSlot::duplicate (the tied embedding's copy on the last stage) are left
// out, so that each parameter counts once.
//
// The norm is a 0-dim fp64 tensor on the gradients' device, never read on the host here: the
// training step decides clipping and skipping on the device (parallel/step_gate.h). The
// collectives are queued on the current stream like any other (NCCL) or complete on return (MPI).
// `params`: the model's, in the layout's slot order.
at::Tensor global_grad_norm_tensor(const ZeroOptimizer& shards, const FlatLayout& layout, const NamedParams& params,
                                   Communicator* tp = nullptr, Communicator* pp = nullptr);

// The same over the run's groups: dp from the shards, tp and pp from `ctx`.
at::Tensor global_grad_norm_tensor(const ZeroOptimizer& shards, const FlatLayout& layout, const NamedParams& params,
                                   const ParallelContext& ctx);

// The norm read on the host (waits for the device): for tests and tools, not the step.
double global_grad_norm(const ZeroOptimizer& shards, const FlatLayout& layout, const NamedParams& params,
                        Communicator* tp = nullptr, Communicator* pp = nullptr);

}  // namespace hydra::parallel
