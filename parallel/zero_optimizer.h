// Data-parallel AdamW with ZeRO sharding over the dp communicator (Rajbhandari et al., ZeRO):
//   stage 0: all-reduce (avg) the flat fp32 gradient; every rank steps every element.
//   stage 1: reduce-scatter (avg) the gradient; each rank steps the part it owns (fp32 master
//            weights, m, v of that part only); all-gather the updated weights.
//   stage 2: as stage 1, but the full flat fp32 gradient buffer is never kept: each bucket is
//            gathered from the parameters' .grad into a bucket-sized staging buffer, reduce-
//            scattered, and only this rank's reduced part stays (see "Memory" below).
//   one rank (no dp group, whatever the stage): nothing to average, so there is no flat fp32
//            gradient either: the gradient norm reads the parameters' .grad directly
//            (parallel/grad_norm.h) and so does AdamW, which also writes the updated weights
//            straight into the parameters (adamw_apply_params; `direct` below).
//
// Buckets. The flat space (parallel/flat_layout.h) is cut into buckets of whole parameters,
// about `bucket_numel` elements each (a parameter larger than that is a bucket of its own).
// Each bucket is one collective, so no reduction is ever as large as the model, and a
// bucket's gradient is complete as soon as backward has passed its parameters. Ownership is
// per bucket: rank r owns part r of every bucket, shard_range(bucket size, dp, r) (uneven
// sizes: the first size % dp parts one element longer; a part may be empty). That is what
// lets a bucket be reduce-scattered while backward still runs on earlier layers; with one
// bucket it is exactly shard_range of the whole flat space. Because buckets hold whole
// parameters, a rank owns at most one contiguous piece of each parameter, so the checkpoint
// stores the state in parameter space unchanged (/optim/<group>/<name> + flat_range) and
// loads it into any other dp size, stage or bucket size.
//
// These are the state and its arithmetic; parallel/data_parallel_optimizer.h is the object a
// trainer uses (built in one step from the model, with the overlap of parallel/grad_overlap.h:
// during the last micro-batch's backward each bucket is reduced as soon as autograd has
// accumulated the final gradient of all its parameters, through zero_bucket_buffer and
// zero_bucket_collective below). Without it, every collective runs after backward on the
// gradients' current stream.
//
// Memory (bytes per rank; N parameters, s = bytes of the model dtype, P = dp, S = elements
// this rank owns = N at stage 0, sum of its bucket parts ~ N/P at stages 1-2, B = largest
// bucket; every number counts a tensor that really exists, see zero_memory()):
//   weights:    s*N                 (the model's parameters, replicated)
//   gradients:  s*N                 (.grad, filled by autograd; kept at every stage)
//             + one rank: nothing   (AdamW reads .grad)
//               stage 0: 4N         (flat fp32 buffer, all-reduced in place)
//               stage 1: 4N + 4S    (flat fp32 buffer + reduced shard)
//               stage 2: 4kB + 4S   (k bucket staging buffers + reduced shard; k = 2 with
//                                    overlap, so a bucket is gathered while one is reduced)
//   optimizer:  13*S                (fp32 master, m, v and AdamW's one-byte decay mask)
// With fp32 weights that is 25 bytes/param at stage 0 (21 with one rank), 12 + 17/P at stage 1 and 4 + 4 + 17/P
// (+ 4kB/N) at stage 2, against the notes' mixed-precision 16, 4 + 12/P and 2 + 14/P: our
// master copy duplicates the fp32 weights, the decay mask costs 1/P, and stage 2 cannot free
// the .grad tensors autograd accumulates into (the saving is the flat fp32 buffer: 4N - 4kB).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/communicator.h"
#include "parallel/flat_layout.h"
#include "parallel/step_gate.h"

namespace hydra::parallel {

// 16M elements (64 MiB of fp32) per bucket: large enough for full NCCL bandwidth.
constexpr int64_t kDefaultBucketNumel = int64_t{1} << 24;

struct ZeroBucket {
  Range flat;         // the bucket's elements in the flat space (whole parameters)
  Range owned;        // this rank's part of it: all of `flat` at stage 0
  int64_t local = 0;  // where `owned` starts in ZeroOptimizer::grad_shard
};

struct ZeroOptimizer {
  int stage = 0;
  Communicator* dp = nullptr;      // the data-parallel group; null means one rank
  bool direct = false;             // one rank: the gradient is read from .grad (no flat_grad)
  std::vector<ZeroBucket> buckets;
  std::vector<AdamWState> states;  // one per bucket, range = bucket.owned
  at::Tensor flat_grad;   // fp32 [N]: stages 0 and 1 with a dp group (stage 1 also all-gathers into it)
  at::Tensor staging;     // fp32 [staging_buffers x largest bucket]: stage 2 only
  int staging_buffers = 1;
  at::Tensor grad_shard;  // fp32 [owned elements]; at stage 0 the same storage as flat_grad; undefined when direct
};

// The bucket ranges of `layout`: whole parameters, at most `bucket_numel` elements unless a
// single parameter is larger. Pure arithmetic (tested on its own).
std::vector<Range> plan_buckets(const FlatLayout& layout, int64_t bucket_numel);

// Builds the state from the parameters' current values (master weights) on their device.
// `dp` may be null (one rank); `stage` 0, 1 or 2. With one rank there is nothing to shard:
// the optimizer runs (and reports its memory) as stage 0 whatever `stage` says.
// `staging_buffers` (stage 2): bucket-sized buffers to gather into; 2 with overlap, so that a
// bucket is gathered while the previous one is reduced.
ZeroOptimizer make_zero_optimizer(const FlatLayout& layout, const NamedParams& params, Communicator* dp,
                                  int stage, int64_t bucket_numel = kDefaultBucketNumel, int staging_buffers = 1);

// The AdamW states, for checkpoints (checkpoint/checkpoint.h takes lists of them).
std::vector<AdamWState*> zero_states(ZeroOptimizer& opt);
std::vector<const AdamWState*> zero_states(const ZeroOptimizer& opt);

// Reads the accumulated .grad of every parameter, averages it over dp bucket by bucket and
// leaves this rank's owned part in grad_shard. Collective over dp. Nothing to do when direct.
void zero_reduce_gradients(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params);

// One bucket's reduction, in two halves that may run on different streams: where its full
// flat gradient is gathered (its range of flat_grad, or staging buffer `staging_index` at
// stage 2), and the collective that averages it over dp into grad_shard (none with one rank;
// refused when direct: there is no buffer).
at::Tensor zero_bucket_buffer(ZeroOptimizer& opt, size_t bucket, int staging_index = 0);
void zero_bucket_collective(ZeroOptimizer& opt, size_t bucket, at::Tensor& full);

// AdamW on the owned elements as `gate` says (clip factor, skip: parallel/step_gate.h; when
// direct, on the parameters' .grad, writing the parameters: adamw_apply_params), then
// the updated weights into every rank's parameters (all-gather per bucket at stages 1-2; a
// skipped step gathers and writes back the unchanged weights, so that every rank issues the
// same collectives without reading the gate on the host). Collective at stages 1-2.
void zero_step(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params, const AdamWHyper& hyper,
               const StepGate& gate);

// Bytes this rank holds, by kind (the Memory section above).
struct ZeroMemory {
  int64_t weights = 0;
  int64_t gradients = 0;
  int64_t optimizer = 0;
};
// Measured: the nbytes of the tensors that exist (parameters, .grad as autograd will
// allocate it in the parameters' dtype, the optimizer's buffers and states).
ZeroMemory zero_memory(const ZeroOptimizer& opt, const NamedParams& params);
// The closed form of the Memory section for `numel` parameters of `dtype_bytes` each over
// `dp_ranks` data-parallel ranks (1: the direct form, whatever `stage` says).
ZeroMemory zero_memory_formula(int stage, int dp_ranks, int64_t numel, int dtype_bytes, int64_t owned,
                               int64_t largest_bucket, int staging_buffers = 1);

// Logs this rank's ZeroMemory through hydra::common::log_info.
void log_zero_memory(const ZeroOptimizer& opt, const NamedParams& params, int world_rank);

}  // namespace hydra::parallel
