#include "parallel/flat_params.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

at::Tensor source_of(const at::Tensor& param, Source what) { return what == Source::kGrad ? param.grad() : param; }

}  // namespace

void flatten_params(const FlatLayout& layout, const NamedParams& params) {
  c10::NoGradGuard no_grad;
  HYDRA_CHECK(layout.slots.size() == params.size(),
              "flatten_params: a layout of " << layout.slots.size() << " slots for " << params.size() << " parameters");
  if (params.empty()) return;
  const at::TensorOptions options = params.front().second.options();
  for (const auto& [name, p] : params) {
    HYDRA_CHECK(p.scalar_type() == options.dtype().toScalarType() && p.device() == options.device(),
                "flatten_params: parameter " << name << " is " << p.scalar_type() << " on " << p.device() << ", not "
                                             << options.dtype() << " on " << options.device());
  }
  const at::Tensor values = at::empty({layout.numel}, options);
  const at::Tensor grads = at::zeros({layout.numel}, options);
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamSlot& slot = layout.slots[i];
    at::Tensor param = params[i].second;
    at::Tensor value = values.narrow(0, slot.offset, slot.numel).view(param.sizes());
    value.copy_(param.detach());
    param.set_data(value);
    param.mutable_grad() = grads.narrow(0, slot.offset, slot.numel).view(param.sizes());
  }
}

at::Tensor flat_span(const FlatLayout& layout, const NamedParams& params, const Range& range, Source what) {
  const std::vector<SlotPiece> pieces = pieces_in(layout, range);
  if (pieces.empty()) return {};
  const at::Tensor first = source_of(params[pieces.front().slot].second, what);
  if (!first.defined() || !first.is_contiguous()) return {};
  const int64_t item = static_cast<int64_t>(first.element_size());
  // Where flat element range.begin would sit if every piece lies where the layout says.
  const auto* start = static_cast<const char*>(first.data_ptr()) + pieces.front().elements.begin * item;
  for (const SlotPiece& piece : pieces) {
    const ParamSlot& slot = layout.slots[piece.slot];
    const at::Tensor t = source_of(params[piece.slot].second, what);
    if (!t.defined() || !t.is_contiguous() || t.scalar_type() != first.scalar_type() ||
        !t.storage().is_alias_of(first.storage())) {
      return {};
    }
    const auto* at_piece = static_cast<const char*>(t.data_ptr()) + piece.elements.begin * item;
    if (at_piece != start + (slot.offset + piece.elements.begin - range.begin) * item) return {};
  }
  const int64_t offset = first.storage_offset() + pieces.front().elements.begin;
  return first.detach().as_strided({range.size()}, {1}, offset);
}

void zero_flat_grads(const FlatLayout& layout, const NamedParams& params) {
  c10::NoGradGuard no_grad;
  at::Tensor grads = flat_span(layout, params, Range{0, layout.numel}, Source::kGrad);
  if (layout.numel > 0 && !grads.defined()) {
    HYDRA_FAIL(common::RuntimeFailure, "the parameters' gradients no longer view one flat buffer (was .grad reset, "
                                       "e.g. by Module::zero_grad(), or a parameter cast or moved?)");
  }
  if (grads.defined()) grads.zero_();
}

}  // namespace hydra::parallel
