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
  // Fixed at enable time.
  std::vector<size_t> bucket_of;      // per slot
  std::vector<size_t> order;          // issue order of the buckets
  size_t hooked_order = 0;            // order[0, hooked_order) may be issued by the hooks
  std::unique_ptr<SideStream> side;
  std::vector<c10::Event> staging_free;  // per staging buffer: recorded after its collective
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keeps hooks installed
  std::vector<uintptr_t> hook_keys;

  // How often each slot's accumulator fires in the last micro-batch's backward: once, or
  // once per recomputed segment that uses it (activation checkpointing runs a backward per
  // segment, and MoR's recursions reuse a block's parameters). Learned in the first armed
  // backward, which therefore reduces everything after backward; relearned on a change.
  std::vector<int> expected;
  bool learned = false;

  // Armed state, valid between zero_arm_overlap and finish_overlap.
  ZeroOptimizer* opt = nullptr;
  const FlatLayout* layout = nullptr;
  const NamedParams* params = nullptr;
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
    const int k = opt->stage == 2 ? issued % opt->staging_buffers : 0;
    if (opt->stage == 2) side->current_waits_on(staging_free[k]);
    at::Tensor full = zero_bucket_buffer(*opt, b, k);
    gather_flat(*layout, *params, opt->buckets[b].flat, Source::kGrad, full);
    side->wait_for_current();
    {
      c10::OptionalStreamGuard on_side(side->stream());
      zero_bucket_collective(*opt, b, full);
    }
    if (opt->stage == 2) side->record(staging_free[k]);
    issued_b[b] = 1;
    ++issued;
  }

  // Autograd has added into a parameter's .grad (the post hook of its accumulator).
  void slot_ready(size_t slot) {
    if (!opt) return;  // not the last micro-batch
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

void zero_enable_overlap(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params,
                         const std::vector<std::string>& deferred) {
  if (!opt.dp || opt.overlap) return;
  HYDRA_CHECK(params.size() == layout.slots.size(), "overlap: " << params.size() << " parameters for "
                                                                << layout.slots.size() << " layout slots");
  auto o = std::make_shared<GradOverlap>();
  const size_t buckets = opt.buckets.size();
  o->bucket_of.assign(layout.slots.size(), 0);
  std::vector<bool> is_deferred(buckets, false);
  const std::unordered_set<std::string> deferred_names(deferred.begin(), deferred.end());
  for (size_t s = 0, b = 0; s < layout.slots.size(); ++s) {
    const ParamSlot& slot = layout.slots[s];
    while (b + 1 < buckets && slot.offset >= opt.buckets[b].flat.end) ++b;
    o->bucket_of[s] = b;
    if (deferred_names.count(slot.name)) is_deferred[b] = true;
  }
  for (size_t b = buckets; b-- > 0;) {
    if (!is_deferred[b]) o->order.push_back(b);
  }
  o->hooked_order = o->order.size();
  for (size_t b = buckets; b-- > 0;) {
    if (is_deferred[b]) o->order.push_back(b);
  }
  const c10::Device device = params.empty() ? c10::Device(c10::kCPU) : params.front().second.device();
  o->side = std::make_unique<SideStream>(device);
  if (opt.stage == 2) {
    // A second staging buffer: one bucket is gathered while the previous one is reduced.
    opt.staging_buffers = 2;
    opt.staging = at::zeros({2 * opt.staging.numel()}, opt.staging.options());
    for (int k = 0; k < opt.staging_buffers; ++k) o->staging_free.emplace_back(device.type());
  }
  for (size_t s = 0; s < params.size(); ++s) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params[s].second);
    HYDRA_CHECK(acc, "overlap: parameter " << params[s].first << " is not a leaf that requires grad");
    o->hook_keys.push_back(acc->add_post_hook(std::make_unique<SlotReadyHook>(o.get(), s)));
    o->accumulators.push_back(std::move(acc));
  }
  opt.overlap = std::move(o);
}

void zero_arm_overlap(ZeroOptimizer& opt, const FlatLayout& layout, const NamedParams& params) {
  GradOverlap* o = opt.overlap.get();
  if (!o) return;
  // A parameter moved to another dtype or device gets a new accumulator without our hook:
  // its gradient would be missed silently, so refuse.
  HYDRA_CHECK(params.size() == o->accumulators.size(), "overlap: " << params.size() << " parameters, hooks on "
                                                                    << o->accumulators.size());
  for (size_t s = 0; s < params.size(); ++s) {
    HYDRA_CHECK(torch::autograd::impl::try_get_grad_accumulator(params[s].second) == o->accumulators[s],
                "overlap: parameter " << params[s].first << " changed dtype or device after the gradient overlap "
                                      << "was enabled (enable it after the model's final cast)");
  }
  o->opt = &opt;
  o->layout = &layout;
  o->params = &params;
  o->fired.assign(layout.slots.size(), 0);
  o->issued_b.assign(opt.buckets.size(), 0);
  o->late = false;
  o->next = 0;
  o->issued = 0;
  // Before the firing counts are known no bucket completes during backward (-1 never
  // reaches 0); finish_overlap issues them all.
  o->pending.assign(opt.buckets.size(), o->learned ? 0 : -1);
  if (o->learned) {
    for (size_t s = 0; s < layout.slots.size(); ++s) o->pending[o->bucket_of[s]] += o->expected[s];
  }
}

bool finish_overlap(ZeroOptimizer& opt) {
  GradOverlap* o = opt.overlap.get();
  if (!o || !o->opt) return false;
  o->issued_during_backward = o->issued;
  while (o->next < o->order.size()) o->issue(o->order[o->next++]);
  o->side->current_waits();
  // A gradient that arrived after its bucket was reduced (the graph changed: another number
  // of recomputed segments, a parameter used once more) makes every rank reduce everything
  // again, now that backward is done: the decision is collective so that all ranks issue
  // the same collectives. The flag costs one tiny all-reduce per step.
  at::Tensor late = at::full({1}, o->late ? 1.0f : 0.0f, opt.grad_shard.options());
  opt.dp->all_reduce(late, ReduceOp::kMax);
  const bool redo = late.item<float>() > 0;
  if (o->fired != o->expected) {
    o->expected = o->fired;
    o->learned = true;
  }
  o->opt = nullptr;
  o->layout = nullptr;
  o->params = nullptr;
  if (redo) {
    ++o->redone;
    return false;  // zero_reduce_gradients reduces every bucket after backward
  }
  return true;
}

OverlapStats overlap_stats(const ZeroOptimizer& opt) {
  OverlapStats s;
  s.buckets = static_cast<int>(opt.buckets.size());
  if (opt.overlap) {
    s.issued_during_backward = opt.overlap->issued_during_backward;
    s.redone = opt.overlap->redone;
  }
  return s;
}

}  // namespace hydra::parallel
