// Reducing gradient buckets during backward (DISTRIBUTED-NOTES.md: overlap the gradient
// reduce-scatter with backward). Only the last micro-batch's backward completes gradients, so
// the overlap is armed just before it (PipelineSpec::before_last_backward). From then on, a
// post hook on each parameter's gradient accumulator (the autograd node that adds into .grad,
// as c10d's reducer does) counts the bucket's parameters down; when a bucket is complete and
// it is the next in the issue order, it is gathered on the compute stream and its collective
// (all-reduce at ZeRO 0, reduce-scatter at 1-2) is enqueued on a side stream, so NCCL runs
// while backward goes on through earlier layers. zero_reduce_gradients then issues what is
// left and makes the compute stream wait for the side stream.
//
// When is a parameter's gradient final? Its accumulator fires once per backward that reaches
// it: once, or once per recomputed segment with activation checkpointing (the recompute runs
// a backward of its own, and MoR's recursions reuse a block's parameters). The counts are
// learned in the first armed backward (which reduces everything after backward) and used
// from then on, as DDP's static_graph does. If a gradient still arrives after its bucket was
// reduced (the graph changed), finish_overlap finds it, all ranks agree in one tiny
// all-reduce, and the reduction is done again after backward: correct, only slower, once.
//
// Why a fixed order: every rank must call the collectives in the same order (communicator.h),
// but hooks may fire in different orders on different ranks (MoD/MoR routing differs per
// batch). Buckets are issued by descending index (backward reaches the last layers first);
// a bucket that is complete early waits for those before it in the order. Buckets that hold a
// `deferred` parameter (the tied embedding under pipeline parallelism, completed by an
// exchange after backward) come last and are issued by zero_reduce_gradients. A parameter
// that gets no gradient in the last micro-batch holds its bucket, and those after it, until
// then too: correct, only less overlapped.
//
// Streams (CUDA): the side stream waits for the compute stream before each collective (the
// gathered bucket is written there), the compute stream waits for the side stream before the
// gradient norm and the step. Buffers are persistent (flat_grad, grad_shard, staging), so no
// record_stream is needed; at stage 2 two staging buffers alternate, and the compute stream
// waits until the collective that last read a buffer is done before gathering into it again.
// On the CPU (MPI) the collectives complete inside the hook: the same order and arithmetic,
// so CI tests this path, but nothing overlaps.
//
// The result is bitwise the same as without overlap: the same gathered values, the same
// collectives in the same order.
#pragma once

#include <string>
#include <vector>

#include "parallel/flat_layout.h"
#include "parallel/zero_optimizer.h"

namespace hydra::parallel {

// Installs the hooks (once; they stay until `opt` is destroyed) and gives stage 2 its second
// staging buffer. No-op with one dp rank. `deferred`: names of parameters whose gradient is
// completed after backward. `params` are the parameters backward will fill (the same tensors
// later passed to zero_arm_overlap), already in their final dtype and device: moving a
// parameter to another dtype or device afterwards makes autograd replace its gradient
// accumulator, and the hook with it (the trainer enables the overlap after its bf16 cast).
void zero_enable_overlap(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params,
                         const std::vector<std::string>& deferred);

// Before the last micro-batch's backward (no-op without overlap). `layout` and `params` must
// stay alive until zero_reduce_gradients.
void zero_arm_overlap(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params);

// Called by zero_reduce_gradients: if armed, issues the remaining buckets in order, makes the
// compute stream wait for the side stream and disarms; returns true if that completed the
// reduction, false if it must be done again after backward (a late gradient on some rank).
bool finish_overlap(ZeroOptimizer& opt);

// How many buckets the last armed backward reduced before it returned, and how many times a
// late gradient made the reduction run again after backward (for the log and tests).
struct OverlapStats {
  int buckets = 0;
  int issued_during_backward = 0;
  int redone = 0;
};
OverlapStats overlap_stats(const ZeroOptimizer& opt);

}  // namespace hydra::parallel
