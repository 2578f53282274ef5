#include "parallel/flat_layout.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "parallel/flat_params.h"

namespace hydra::parallel {

bool decays(const std::string& name, const at::Tensor& param) {
  return param.dim() >= 2 && name.find("router") == std::string::npos;
}

FlatLayout make_flat_layout(const NamedParams& params) {
  FlatLayout layout;
  for (const auto& [name, p] : params) {
    ParamSlot slot;
    slot.name = name;
    slot.shape = std::vector<int64_t>(p.sizes().begin(), p.sizes().end());
    slot.offset = layout.numel;
    slot.numel = p.numel();
    slot.decay = decays(name, p);
    layout.numel += slot.numel;
    layout.slots.push_back(std::move(slot));
  }
  return layout;
}

std::vector<SlotPiece> pieces_in(const FlatLayout& layout, const Range& range) {
  std::vector<SlotPiece> pieces;
  for (size_t i = 0; i < layout.slots.size(); ++i) {
    const ParamSlot& s = layout.slots[i];
    const int64_t begin = std::max(range.begin, s.offset);
    const int64_t end = std::min(range.end, s.offset + s.numel);
    if (begin < end) pieces.push_back({i, Range{begin - s.offset, end - s.offset}});
  }
  return pieces;
}

void gather_flat(const FlatLayout& layout, const NamedParams& params, const Range& range, Source what,
                 at::Tensor& out) {
  c10::NoGradGuard no_grad;
  if (const at::Tensor span = flat_span(layout, params, range, what); span.defined()) {
    out.copy_(span);  // flattened parameters (parallel/flat_params.h): one copy
    return;
  }
  for (const SlotPiece& piece : pieces_in(layout, range)) {
    const ParamSlot& slot = layout.slots[piece.slot];
    const at::Tensor& p = params[piece.slot].second;
    at::Tensor dst = out.narrow(0, slot.offset + piece.elements.begin - range.begin, piece.elements.size());
    const at::Tensor src = what == Source::kGrad ? p.grad() : p.detach();
    if (!src.defined()) {
      dst.zero_();
    } else {
      dst.copy_(src.reshape(-1).narrow(0, piece.elements.begin, piece.elements.size()));
    }
  }
}

void scatter_flat(const FlatLayout& layout, const NamedParams& params, const Range& range,
                  const at::Tensor& flat) {
  c10::NoGradGuard no_grad;
  if (at::Tensor span = flat_span(layout, params, range, Source::kValue); span.defined()) {
    span.copy_(flat);  // flattened parameters (parallel/flat_params.h): one copy
    return;
  }
  for (const SlotPiece& piece : pieces_in(layout, range)) {
    const ParamSlot& slot = layout.slots[piece.slot];
    at::Tensor p = params[piece.slot].second.detach();
    const at::Tensor src = flat.narrow(0, slot.offset + piece.elements.begin - range.begin, piece.elements.size());
    p.view(-1).narrow(0, piece.elements.begin, piece.elements.size()).copy_(src);
  }
}

}  // namespace hydra::parallel
