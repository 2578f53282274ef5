#include "common/logging.h"
#include "parallel/zero_optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

int group_size(const ZeroOptimizer& opt) { return opt.dp ? opt.dp->size() : 1; }

// This rank's part of the reduced gradient of bucket `b`.
at::Tensor owned_grad(ZeroOptimizer& opt, size_t b) {
  const ZeroBucket& bucket = opt.buckets[b];
  return opt.grad_shard.narrow(0, bucket.local, bucket.owned.size());
}

}  // namespace

at::Tensor zero_bucket_buffer(ZeroOptimizer& opt, size_t b, int staging_index) {
  const Range& flat = opt.buckets[b].flat;
  HYDRA_CHECK(!opt.direct, "zero_bucket_buffer: one rank keeps no gradient buffer");
  if (opt.stage < 2) return opt.flat_grad.narrow(0, flat.begin, flat.size());
  const int64_t stride = opt.staging.numel() / opt.staging_buffers;
  return opt.staging.narrow(0, staging_index * stride, flat.size());
}

void zero_bucket_collective(ZeroOptimizer& opt, size_t b, at::Tensor& full) {
  if (!opt.dp) return;
  if (opt.stage == 0) {
    opt.dp->all_reduce(full, ReduceOp::kAvg);
  } else {
    at::Tensor mine = owned_grad(opt, b);
    opt.dp->reduce_scatter(full, mine, ReduceOp::kAvg);
  }
}

std::vector<Range> plan_buckets(const FlatLayout& layout, int64_t bucket_numel) {
  HYDRA_CHECK(bucket_numel > 0, "bucket size " << bucket_numel);
  std::vector<Range> buckets;
  for (const ParamSlot& slot : layout.slots) {
    const bool fits = !buckets.empty() && buckets.back().size() + slot.numel <= bucket_numel;
    if (fits) {
      buckets.back().end += slot.numel;
    } else if (buckets.empty() || buckets.back().size() > 0) {
      buckets.push_back({slot.offset, slot.offset + slot.numel});
    } else {
      buckets.back().end += slot.numel;  // only zero-size slots so far
    }
  }
  return buckets;
}

ZeroOptimizer make_zero_optimizer(const FlatLayout& layout, const NamedParams& params, Communicator* dp,
                                  int stage, int64_t bucket_numel, int staging_buffers) {
  HYDRA_CHECK(stage >= 0 && stage <= 2, "zero stage " << stage);
  HYDRA_CHECK(staging_buffers >= 1, "staging buffers " << staging_buffers);
  ZeroOptimizer opt;
  opt.dp = dp && dp->size() > 1 ? dp : nullptr;
  opt.stage = opt.dp ? stage : 0;  // one rank: nothing to shard
  opt.direct = opt.dp == nullptr;  // ... nor to average: no flat gradient buffer
  const int parts = group_size(opt);
  const int rank = opt.dp ? opt.dp->rank() : 0;
  int64_t owned_total = 0;
  int64_t largest = 0;
  for (const Range& flat : plan_buckets(layout, bucket_numel)) {
    ZeroBucket bucket;
    bucket.flat = flat;
    if (opt.stage == 0) {
      bucket.owned = flat;
    } else {
      const Range part = shard_range(flat.size(), parts, rank);
      bucket.owned = {flat.begin + part.begin, flat.begin + part.end};
    }
    bucket.local = owned_total;
    owned_total += bucket.owned.size();
    largest = std::max(largest, flat.size());
    opt.buckets.push_back(bucket);
    opt.states.push_back(make_adamw_state(layout, params, bucket.owned));
  }
  const at::TensorOptions fp32 = master_options(params);  // (fp64 for fp64 parameters: tests)
  if (opt.direct) return opt;  // no gradient buffer at all: AdamW reads .grad (adamw_apply_params)
  if (opt.stage < 2) opt.flat_grad = at::zeros({layout.numel}, fp32);
  if (opt.stage == 2) {
    opt.staging_buffers = staging_buffers;
    opt.staging = at::zeros({staging_buffers * largest}, fp32);
  }
  // Stage 0 owns everything in flat order, so its shard is the flat buffer itself.
  opt.grad_shard = opt.stage == 0 ? opt.flat_grad : at::zeros({owned_total}, fp32);
  return opt;
}

std::vector<AdamWState*> zero_states(ZeroOptimizer& opt) {
  std::vector<AdamWState*> out;
  for (auto& s : opt.states) out.push_back(&s);
  return out;
}

std::vector<const AdamWState*> zero_states(const ZeroOptimizer& opt) {
  std::vector<const AdamWState*> out;
  for (const auto& s : opt.states) out.push_back(&s);
  return out;
}

void zero_reduce_gradients(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params) {
  c10::NoGradGuard no_grad;
  if (opt.direct) return;  // one rank: the step reads .grad itself
  // Buckets in a fixed order on every rank (the communicator's contract). Each bucket is
  // complete before its collective: gather it, reduce it, move on; the staging buffer of
  // stage 2 is reused because the MPI calls (and NCCL calls, in stream order) are done with
  // it before the next gather writes it.
  for (size_t b = 0; b < opt.buckets.size(); ++b) {
    at::Tensor full = zero_bucket_buffer(opt, b);
    gather_flat(layout, params, opt.buckets[b].flat, Source::kGrad, full);
    zero_bucket_collective(opt, b, full);
  }
}

void zero_step(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params, const AdamWHyper& hyper,
               const StepGate& gate) {
  c10::NoGradGuard no_grad;
  if (opt.states.empty()) return;
  // The scalars once for all buckets: their states hold the same step count.
  const AdamWUpdate update = plan_adamw_update(opt.states.front().step, hyper, gate, opt.states.front().master.options());
  for (size_t b = 0; b < opt.buckets.size(); ++b) {
    const ZeroBucket& bucket = opt.buckets[b];
    AdamWState& state = opt.states[b];
    if (opt.direct) {  // reads .grad and writes the parameters itself
      adamw_apply_params(state, layout, params, hyper, update);
      continue;
    }
    adamw_apply(state, owned_grad(opt, b), hyper, update);
    if (opt.stage == 0) {
      scatter_flat(layout, params, bucket.owned, state.master);
      continue;
    }
    // The gradient in the bucket's buffer has been consumed (reduce-scattered), so the
    // buffer takes the gathered weights.
    at::Tensor full = zero_bucket_buffer(opt, b);
    opt.dp->all_gather(state.master, full);
    scatter_flat(layout, params, bucket.flat, full);
  }
}

ZeroMemory zero_memory(const ZeroOptimizer& opt, const NamedParams& params) {
  ZeroMemory m;
  for (const auto& [name, p] : params) {
    m.weights += static_cast<int64_t>(p.nbytes());
    m.gradients += static_cast<int64_t>(p.nbytes());  // .grad has the parameter's dtype and shape
  }
  auto bytes = [](const at::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0}; };
  m.gradients += bytes(opt.flat_grad) + bytes(opt.staging);
  if (opt.stage > 0) m.gradients += bytes(opt.grad_shard);  // stage 0: the flat buffer itself (or none)
  for (const AdamWState& s : opt.states) {
    m.optimizer += bytes(s.master) + bytes(s.exp_avg) + bytes(s.exp_avg_sq) + bytes(s.decay_mask);
  }
  return m;
}

ZeroMemory zero_memory_formula(int stage, int dp_ranks, int64_t numel, int dtype_bytes, int64_t owned,
                               int64_t largest_bucket, int staging_buffers) {
  ZeroMemory m;
  m.weights = dtype_bytes * numel;
  m.gradients = dtype_bytes * numel;
  m.optimizer = 13 * owned;
  if (dp_ranks == 1) return m;  // no gradient buffer: AdamW reads .grad
  if (stage == 0) m.gradients += 4 * numel;
  if (stage == 1) m.gradients += 4 * numel + 4 * owned;
  if (stage == 2) m.gradients += 4 * largest_bucket * staging_buffers + 4 * owned;
  return m;
}

void log_zero_memory(const ZeroOptimizer& opt, const NamedParams& params, int world_rank) {
  const ZeroMemory m = zero_memory(opt, params);
  int64_t numel = 0;
  for (const auto& item : params) numel += item.second.numel();
  const int dtype_bytes = params.empty() ? 4 : static_cast<int>(params.front().second.element_size());
  int64_t owned = 0;
  int64_t largest = 0;
  for (const ZeroBucket& b : opt.buckets) owned += b.owned.size(), largest = std::max(largest, b.flat.size());
  const ZeroMemory f =
      zero_memory_formula(opt.stage, group_size(opt), numel, dtype_bytes, owned, largest, opt.staging_buffers);
  const bool match = f.weights == m.weights && f.gradients == m.gradients && f.optimizer == m.optimizer;
  const double mib = 1.0 / (1 << 20);
  common::log_info("memory: rank %d, zero stage %d over %d dp ranks, %zu buckets: weights %lld B (%.2f MiB), "
                   "gradients %lld B (%.2f MiB), optimizer %lld B (%.2f MiB)%s",
                   world_rank, opt.stage, group_size(opt), opt.buckets.size(), static_cast<long long>(m.weights),
                   m.weights * mib, static_cast<long long>(m.gradients), m.gradients * mib,
                   static_cast<long long>(m.optimizer), m.optimizer * mib,
                   match ? "; matches the ZeRO formula" : "; DIFFERS from the ZeRO formula");
}

}  // namespace hydra::parallel
