#include "parallel/data_parallel_optimizer.h"

#include <utility>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

// The parameters it trains: those that require a gradient. A frozen parameter (train.freeze)
// is left out of everything here: master weights, moments, buckets, hooks, reductions, and
// so the gradient norm; its value stays the model's.
NamedParams named_params(const torch::nn::Module& model) {
  NamedParams out;
  for (const auto& item : model.named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

void check_layout(const FlatLayout& layout, const NamedParams& params) {
  HYDRA_CHECK(layout.slots.size() == params.size(), "data-parallel optimizer: a layout of "
                                                        << layout.slots.size() << " slots for " << params.size()
                                                        << " parameters");
  for (size_t s = 0; s < params.size(); ++s) {
    const auto& [name, p] = params[s];
    HYDRA_CHECK(layout.slots[s].name == name && layout.slots[s].numel == p.numel(),
                "data-parallel optimizer: layout slot " << s << " is " << layout.slots[s].name << ", parameter "
                                                        << name);
    HYDRA_CHECK(p.scalar_type() == at::kFloat, "data-parallel optimizer: parameter "
                                                   << name << " is " << p.scalar_type()
                                                   << "; master weights are read from the fp32 values");
  }
}

}  // namespace

struct DataParallelOptimizer::Parts {
  FlatLayout layout;
  NamedParams params;
  Communicator* dp = nullptr;
  DataParallelOptions options;
  ZeroOptimizer zero;
  GradOverlapPtr overlap;  // null: every bucket is reduced after backward
  bool reduced = false;  // reduce_gradients() ran since the last step()

  bool overlapped() const { return options.overlap && dp && dp->size() > 1; }

  // The ZeRO state, master weights from the parameters' current values.
  void make_zero() {
    overlap.reset();  // its hooks come off (and its buffers go) before new ones are made
    // Overlap at stage 2: a second staging buffer, gathered while the first one is reduced.
    const int staging = overlapped() && options.zero_stage == 2 ? 2 : 1;
    zero = make_zero_optimizer(layout, params, dp, options.zero_stage, options.bucket_numel, staging);
    reduced = false;
  }

  // With two or more dp ranks: the hooks that reduce buckets during backward, on `params`
  // in their final dtype and device.
  void attach_overlap() {
    if (!overlapped()) return;
    OverlapBuckets buckets;
    for (const ZeroBucket& b : zero.buckets) buckets.flat.push_back(b.flat);
    buckets.staging_buffers = zero.stage == 2 ? zero.staging_buffers : 0;
    buckets.gather = [this](size_t b, int k) {
      at::Tensor full = zero_bucket_buffer(zero, b, k);
      gather_flat(layout, params, zero.buckets[b].flat, Source::kGrad, full);
      return full;
    };
    buckets.collective = [this](size_t b, at::Tensor& full) { zero_bucket_collective(zero, b, full); };
    buckets.dp = zero.dp;
    overlap = make_grad_overlap(layout, params, std::move(buckets), options.deferred);
  }

  void require_reduced(const char* what) const {
    HYDRA_CHECK(reduced, "data-parallel optimizer: " << what << " before reduce_gradients(): the gradients of "
                                                     << "this step have not been averaged over dp");
  }
};

DataParallelOptimizer::DataParallelOptimizer(torch::nn::Module& model, FlatLayout layout, Communicator* dp,
                                             const DataParallelOptions& options)
    : parts_(std::make_unique<Parts>()) {
  Parts& p = *parts_;
  p.params = named_params(model);
  check_layout(layout, p.params);
  p.layout = std::move(layout);
  p.dp = dp;
  p.options = options;
  // Master weights from the fp32 values, then the cast, then the hooks (see the header).
  p.make_zero();
  if (options.compute_dtype != at::kFloat) model.to(options.compute_dtype);
  p.params = named_params(model);  // the same names, now in the compute dtype
  p.attach_overlap();
}

DataParallelOptimizer::DataParallelOptimizer(DataParallelOptimizer&&) noexcept = default;
DataParallelOptimizer& DataParallelOptimizer::operator=(DataParallelOptimizer&&) noexcept = default;
DataParallelOptimizer::~DataParallelOptimizer() = default;

void DataParallelOptimizer::zero_grad() {
  // Dropped rather than zeroed: backward then takes each parameter's first gradient as it
  // comes (no fill, no add); a missing gradient reads as 0 in the gather.
  for (auto& [name, p] : parts_->params) p.mutable_grad().reset();
}

void DataParallelOptimizer::arm_overlap() {
  if (parts_->overlap) parallel::arm_overlap(*parts_->overlap, parts_->params);
}

void DataParallelOptimizer::reduce_gradients() {
  Parts& p = *parts_;
  if (!p.overlap || !finish_overlap(*p.overlap)) zero_reduce_gradients(p.zero, p.layout, p.params);
  p.reduced = true;
}

void DataParallelOptimizer::step(const AdamWHyper& hyper, const StepGate& gate) {
  Parts& p = *parts_;
  p.require_reduced("step()");
  zero_step(p.zero, p.layout, p.params, hyper, gate);
  p.reduced = false;
}

void DataParallelOptimizer::reload_master_from_params() {
  parts_->make_zero();
  parts_->attach_overlap();
}

const NamedParams& DataParallelOptimizer::params() const { return parts_->params; }
const FlatLayout& DataParallelOptimizer::layout() const { return parts_->layout; }
const ZeroOptimizer& DataParallelOptimizer::shards() const { return parts_->zero; }
std::vector<AdamWState*> DataParallelOptimizer::states() { return zero_states(parts_->zero); }
std::vector<const AdamWState*> DataParallelOptimizer::states() const {
  return zero_states(std::as_const(parts_->zero));
}
bool DataParallelOptimizer::overlapping() const { return parts_->overlap != nullptr; }

OverlapStats DataParallelOptimizer::overlap_stats() const {
  if (parts_->overlap) return parallel::overlap_stats(*parts_->overlap);
  OverlapStats s;
  s.buckets = static_cast<int>(parts_->zero.buckets.size());
  return s;
}

void DataParallelOptimizer::log_memory(int world_rank) const {
  log_zero_memory(parts_->zero, parts_->params, world_rank);
}

}  // namespace hydra::parallel
