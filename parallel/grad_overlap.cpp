#include "parallel/grad_overlap.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <memory>
#include <unordered_set>

#include "common/errors.h"
#include "parallel/side_stream.h"

namespace hydra::parallel {

struct GradOverlap {
  // Fixed at construction.
  OverlapBuckets buckets;
  std::vector<size_t> bucket_of;      // per slot
  std::vector<size_t> order;          // issue order of the buckets
  size_t hooked_order = 0;            // order[0, hooked_order) may be issued by the hooks
  std::unique_ptr<SideStream> side;
  at::TensorOptions late_flag_options;  // fp32 on the parameters' device
  std::vector<c10::Event> staging_free;  // per staging buffer: recorded after its collective
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keeps hooks installed
  std::vector<uintptr_t> hook_keys;

  // How often each slot's accumulator fires in the last micro-batch's backward: once, or
  // once per recomputed segment that uses it (activation checkpointing runs a backward per
  // segment, and MoR's recursions reuse a block's parameters). Learned in the first armed
  // backward, which therefore reduces everything after backward; relearned on a change.
  std::vector<int> expected;
  bool learned = false;

  // Armed state, valid between arm_overlap and finish_overlap.
  bool armed = false;
  std::vector<int> pending;     // per bucket: accumulator firings still to come
  std::vector<int> fired;       // per slot: firings in this backward
  std::vector<char> issued_b;   // per bucket: its collective has been enqueued
  bool late = false;            // a gradient arrived after its bucket was reduced
  size_t next = 0;              // position in `order` of the next bucket to issue
  int issued = 0;               // collectives enqueued so far in this backward
  int issued_during_backward = 0;
  int redone = 0;               // backwards whose reduction was redone after a late gradient

  ~GradOverlap() {
    for (size_t i = 0; i < accumulators.size(); ++i) accumulators[i]->del_post_hook(hook_keys[i]);
  }

  void issue(size_t b) {
    c10::NoGradGuard no_grad;
    const bool staged = buckets.staging_buffers > 0;
    const int k = staged ? issued % buckets.staging_buffers : 0;
    if (staged) side->current_waits_on(staging_free[k]);
    at::Tensor full = buckets.gather(b, k);
    side->wait_for_current();
    {
      c10::OptionalStreamGuard on_side(side->stream());
      buckets.collective(b, full);
    }
    if (staged) side->record(staging_free[k]);
    issued_b[b] = 1;
    ++issued;
  }

  // Autograd has added into a parameter's .grad (the post hook of its accumulator).
  void slot_ready(size_t slot) {
    if (!armed) return;  // not the last micro-batch
    ++fired[slot];
    const size_t b = bucket_of[slot];
    if (issued_b[b]) {
      late = true;  // finish_overlap reduces again
      return;
    }
    if (pending[b] > 0) --pending[b];
    while (next < hooked_order && pending[order[next]] == 0) issue(order[next++]);
  }
};

namespace {

// Calls GradOverlap::slot_ready after autograd has accumulated a parameter's gradient.
struct SlotReadyHook : torch::autograd::FunctionPostHook {
  SlotReadyHook(GradOverlap* o, size_t s) : overlap(o), slot(s) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    overlap->slot_ready(slot);
    return outputs;
  }
  GradOverlap* overlap;  // owns the accumulator that owns this hook
  size_t slot;
};

}  // namespace

void GradOverlapDelete::operator()(GradOverlap* overlap) const { delete overlap; }

GradOverlapPtr make_grad_overlap(const FlatLayout& layout, const NamedParams& params, OverlapBuckets buckets,
                                 const std::vector<std::string>& deferred) {
  HYDRA_CHECK(buckets.dp && buckets.dp->size() > 1, "overlap: needs a data-parallel group of two or more ranks");
  HYDRA_CHECK(params.size() == layout.slots.size(), "overlap: " << params.size() << " parameters for "
                                                                << layout.slots.size() << " layout slots");
  GradOverlapPtr o(new GradOverlap());
  const size_t count = buckets.flat.size();
  o->bucket_of.assign(layout.slots.size(), 0);
  std::vector<bool> is_deferred(count, false);
  const std::unordered_set<std::string> deferred_names(deferred.begin(), deferred.end());
  for (size_t s = 0, b = 0; s < layout.slots.size(); ++s) {
    const ParamSlot& slot = layout.slots[s];
    while (b + 1 < count && slot.offset >= buckets.flat[b].end) ++b;
    o->bucket_of[s] = b;
    if (deferred_names.count(slot.name)) is_deferred[b] = true;
  }
  for (size_t b = count; b-- > 0;) {
    if (!is_deferred[b]) o->order.push_back(b);
  }
  o->hooked_order = o->order.size();
  for (size_t b = count; b-- > 0;) {
    if (is_deferred[b]) o->order.push_back(b);
  }
  const c10::Device device = params.empty() ? c10::Device(c10::kCPU) : params.front().second.device();
  o->side = std::make_unique<SideStream>(device);
  o->late_flag_options = at::TensorOptions().dtype(at::kFloat).device(device);
  for (int k = 0; k < buckets.staging_buffers; ++k) o->staging_free.emplace_back(device.type());
  o->buckets = std::move(buckets);
  for (size_t s = 0; s < params.size(); ++s) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params[s].second);
    HYDRA_CHECK(acc, "overlap: parameter " << params[s].first << " is not a leaf that requires grad");
    o->hook_keys.push_back(acc->add_post_hook(std::make_unique<SlotReadyHook>(o.get(), s)));
    o->accumulators.push_back(std::move(acc));
  }
  return o;
}

void arm_overlap(GradOverlap& o, const NamedParams& params) {
  // A parameter moved to another dtype or device gets a new accumulator without our hook:
  // its gradient would be missed silently, so refuse.
  HYDRA_CHECK(params.size() == o.accumulators.size(), "overlap: " << params.size() << " parameters, hooks on "
                                                                   << o.accumulators.size());
  for (size_t s = 0; s < params.size(); ++s) {
    HYDRA_CHECK(torch::autograd::impl::try_get_grad_accumulator(params[s].second) == o.accumulators[s],
                "overlap: parameter " << params[s].first << " changed dtype or device after the gradient overlap "
                                      << "was enabled (enable it after the model's final cast)");
  }
  const size_t count = o.buckets.flat.size();
  o.armed = true;
  o.fired.assign(params.size(), 0);
  o.issued_b.assign(count, 0);
  o.late = false;
  o.next = 0;
  o.issued = 0;
  // Before the firing counts are known no bucket completes during backward (-1 never
  // reaches 0); finish_overlap issues them all.
  o.pending.assign(count, o.learned ? 0 : -1);
  if (o.learned) {
    for (size_t s = 0; s < params.size(); ++s) o.pending[o.bucket_of[s]] += o.expected[s];
  }
}

bool finish_overlap(GradOverlap& o) {
  if (!o.armed) return false;
  o.issued_during_backward = o.issued;
  while (o.next < o.order.size()) o.issue(o.order[o.next++]);
  o.side->current_waits();
  // A gradient that arrived after its bucket was reduced (the graph changed: another number
  // of recomputed segments, a parameter used once more) makes every rank reduce everything
  // again, now that backward is done: the decision is collective so that all ranks issue
  // the same collectives. The flag costs one tiny all-reduce per step.
  at::Tensor late = at::full({1}, o.late ? 1.0f : 0.0f, o.late_flag_options);
  o.buckets.dp->all_reduce(late, ReduceOp::kMax);
  const bool redo = late.item<float>() > 0;
  if (o.fired != o.expected) {
    o.expected = o.fired;
    o.learned = true;
  }
  o.armed = false;
  if (redo) {
    ++o.redone;
    return false;  // the owner reduces every bucket after backward
  }
  return true;
}

OverlapStats overlap_stats(const GradOverlap& o) {
  OverlapStats s;
  s.buckets = static_cast<int>(o.buckets.flat.size());
  s.issued_during_backward = o.issued_during_backward;
  s.redone = o.redone;
  return s;
}

}  // namespace hydra::parallel
