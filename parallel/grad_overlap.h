// Reducing gradient buckets during backward (overlapping the gradient reduce-scatter with
// backward, as PyTorch DDP's reducer does). Only the last micro-batch's backward completes gradients, so
// the overlap is armed just before it (PipelineSpec::before_last_backward). From then on, a
// post hook on each parameter's gradient accumulator (the autograd node that adds into .grad,
// as c10d's reducer does) counts the bucket's parameters down; when a bucket is complete and
// it is the next in the issue order, it is gathered on the compute stream and its collective
// (all-reduce at ZeRO 0, reduce-scatter at 1-2) is enqueued on a side stream, so NCCL runs
// while backward goes on through earlier layers. finish_overlap then issues what is left and
// makes the compute stream wait for the side stream.
//
// It knows nothing of the optimizer: its owner (parallel/data_parallel_optimizer.h) gives it
// the buckets and the two halves of a bucket's reduction (OverlapBuckets).
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
// exchange after backward) come last and are issued by finish_overlap. A parameter
// that gets no gradient in the last micro-batch holds its bucket, and those after it, until
// then too: correct, only less overlapped.
//
// Streams (CUDA): the side stream waits for the compute stream before each collective (the
// gathered bucket is written there), the compute stream waits for the side stream before the
// gradient norm and the step. Buffers are persistent (the owner's), so no record_stream is
// needed; with staging buffers (ZeRO stage 2: two that alternate) the compute stream waits
// until the collective that last read a buffer is done before gathering into it again.
// On the CPU (MPI) the collectives complete inside the hook: the same order and arithmetic,
// so CI tests this path, but nothing overlaps.
//
// The result is bitwise the same as without overlap: the same gathered values, the same
// collectives in the same order.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/flat_layout.h"

namespace hydra::parallel {

// What is reduced, given by the owner of the buffers. A bucket's reduction has two halves
// that may run on different streams: `gather` writes its full flat gradient from the
// parameters' .grad into a buffer and returns it (compute stream); `collective` averages that
// buffer over dp into wherever the owner keeps its part (the current stream: the side stream
// during backward).
struct OverlapBuckets {
  std::vector<Range> flat;  // each bucket's elements in the flat space (whole slots)
  // 0: every bucket gathers into memory of its own. k > 0: into k staging buffers taken in
  // turn (buffer = issued % k), each reused only after the collective that last read it.
  int staging_buffers = 0;
  std::function<at::Tensor(size_t bucket, int buffer)> gather;
  std::function<void(size_t bucket, at::Tensor& full)> collective;
  Communicator* dp = nullptr;  // more than one rank: the group that agrees on late gradients
};

struct GradOverlap;  // grad_overlap.cpp
struct GradOverlapDelete {
  void operator()(GradOverlap* overlap) const;
};
using GradOverlapPtr = std::unique_ptr<GradOverlap, GradOverlapDelete>;

// Installs the hooks (they stay until the result is destroyed). `params`: the parameters
// backward will fill, in the layout's slot order, already in their final dtype and device:
// moving a parameter to another dtype or device afterwards makes autograd replace its
// gradient accumulator, and the hook with it (arm_overlap refuses then). `deferred`: names of
// parameters whose gradient is completed after backward.
GradOverlapPtr make_grad_overlap(const FlatLayout& layout, const NamedParams& params, OverlapBuckets buckets,
                                 const std::vector<std::string>& deferred);

// Before the last micro-batch's backward. `params` (the same as at make_grad_overlap) must
// stay alive until finish_overlap.
void arm_overlap(GradOverlap& overlap, const NamedParams& params);

// After backward: if armed, issues the remaining buckets in order, makes the compute stream
// wait for the side stream and disarms; returns true if that completed the reduction, false
// if it must be done again after backward (not armed, or a late gradient on some rank).
bool finish_overlap(GradOverlap& overlap);

// How many buckets the last armed backward reduced before it returned, and how many times a
// late gradient made the reduction run again after backward (for the log and tests).
struct OverlapStats {
  int buckets = 0;
  int issued_during_backward = 0;
  int redone = 0;
};
OverlapStats overlap_stats(const GradOverlap& overlap);

}  // namespace hydra::parallel
