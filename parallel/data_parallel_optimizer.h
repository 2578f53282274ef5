// The data-parallel optimizer a trainer uses: ZeRO-sharded AdamW (parallel/zero_optimizer.h)
// over the flat fp32 space of a model's parameters, with the gradient reduction overlapped
// with backward (parallel/grad_overlap.h). It owns its layout, its parameters, the ZeRO state
// and the overlap hooks, and with them the order they need (docs/ARCHITECTURE.md, "One step"):
//
//   parameters     those of the model that require a gradient, in model order; a frozen one
//                  (requires_grad false: train.freeze) has no master weights, moments, bucket,
//                  hook or reduction, and no part in the gradient norm.
//   construction   one step: the model's fp32 parameters, on their final device, become the
//                  master weights; then the model is cast to its compute dtype; then the
//                  parameters' gradient accumulators are hooked. (Master weights read after
//                  the cast would be rounded; hooks installed before it would be dropped by
//                  the cast, losing those gradients silently.) There is no other constructor.
//   each step      zero_grad(), arm_overlap() just before the last micro-batch's backward (a no-op without
//                  overlap), reduce_gradients() after backward, then step() with the gate
//                  that says whether and how much of the gradient applies (clipping and the
//                  skip of a non-finite step, decided on the device: parallel/step_gate.h).
//                  step() without a reduction since the last step() is refused (RuntimeFailure).
//   checkpoints    params(), layout(), states().
//   --init-from    after loading weights into params(): reload_master_from_params() makes
//                  fresh master weights and moments from them.
//
// The global gradient norm is not a member: it depends on every parallel axis
// (parallel/grad_norm.h); it reads shards() and layout().
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/communicator.h"
#include "parallel/flat_layout.h"
#include "parallel/grad_overlap.h"
#include "parallel/step_gate.h"
#include "parallel/zero_optimizer.h"

namespace hydra::parallel {

struct DataParallelOptions {
  int zero_stage = 0;                         // 0, 1 or 2 (parallel.zero_stage)
  int64_t bucket_numel = kDefaultBucketNumel;  // elements per gradient bucket
  bool overlap = true;                        // reduce buckets during backward (with 2+ dp ranks)
  std::vector<std::string> deferred;          // parameters whose gradient is completed after
                                              // backward (the tied embedding under pp)
  at::ScalarType compute_dtype = at::kFloat;  // the model's dtype after construction
};

class DataParallelOptimizer {
 public:
  // `model`: fp32 parameters on their final device. `layout`: make_flat_layout of its
  // named_parameters() that require a gradient (with tp_split and duplicate marked); checked
  // against them. `dp` may
  // be null (one rank).
  DataParallelOptimizer(torch::nn::Module& model, FlatLayout layout, Communicator* dp,
                        const DataParallelOptions& options);
  DataParallelOptimizer(DataParallelOptimizer&&) noexcept;
  DataParallelOptimizer& operator=(DataParallelOptimizer&&) noexcept;
  ~DataParallelOptimizer();

  // Before the last micro-batch's backward: from then on buckets are reduced as their
  // gradients complete. Refuses parameters cast or moved since construction.
  void arm_overlap();
  // After backward: averages the gradients over dp (what the overlap has not done yet); this
  // rank's part is in shards().grad_shard. Collective over dp.
  void reduce_gradients();
  // Drops every gradient before a step's first backward.
  void zero_grad();
  // AdamW on the owned elements with the gradient times gate.clip_factor, nothing changed
  // where gate.finite is false; the (updated) weights into every rank's parameters in their
  // compute dtype (all-gather at ZeRO 1-2), after reduce_gradients(). Collective at ZeRO 1-2.
  // Reads nothing on the host.
  void step(const AdamWHyper& hyper, const StepGate& gate);
  // --init-from: master weights from the parameters' current values, moments and step
  // counts zero, the overlap's learned firing counts forgotten.
  void reload_master_from_params();

  const NamedParams& params() const;  // the model's trainable ones, in their compute dtype
  const FlatLayout& layout() const;
  const ZeroOptimizer& shards() const;  // buckets, the reduced gradient part, the stage
  std::vector<AdamWState*> states();    // for checkpoints (one per bucket)
  std::vector<const AdamWState*> states() const;
  bool overlapping() const;             // false: every bucket is reduced after backward
  OverlapStats overlap_stats() const;
  void log_memory(int world_rank) const;  // this rank's bytes against the ZeRO formulas

 private:
  struct Parts;
  std::unique_ptr<Parts> parts_;  // on the heap: the overlap's hooks point into it
};

}  // namespace hydra::parallel
