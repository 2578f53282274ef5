#include "parallel/flat_layout.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "common/torch_compat.h"

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

// One launch (or a few) instead of one per parameter: the pieces are concatenated by one
// batched copy into `out` when they share its dtype, else into a temporary of their dtype
// that one cast copies into `out` (bf16 gradients into the fp32 buffer). Bitwise the copies
// the per-parameter loop made.
void gather_flat(const FlatLayout& layout, const NamedParams& params, const Range& range, Source what,
                 at::Tensor& out) {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> pieces;
  for (const SlotPiece& piece : pieces_in(layout, range)) {
    const at::Tensor& p = params[piece.slot].second;
    const at::Tensor src = what == Source::kGrad ? p.grad() : p.detach();
    pieces.push_back(src.defined() ? src.reshape(-1).narrow(0, piece.elements.begin, piece.elements.size())
                                   : at::zeros({piece.elements.size()}, p.options()));  // no gradient: 0
  }
  if (pieces.empty()) return;
  const at::ScalarType dtype = pieces.front().scalar_type();
  const bool one_dtype =
      std::all_of(pieces.begin(), pieces.end(), [&](const at::Tensor& t) { return t.scalar_type() == dtype; });
  if (one_dtype && dtype == out.scalar_type()) {
    at::cat_out(out, pieces);
  } else if (one_dtype) {
    out.copy_(at::cat(pieces));
  } else {  // parameters of several dtypes: piece by piece
    int64_t offset = 0;
    for (const at::Tensor& part : pieces) {
      out.narrow(0, offset, part.numel()).copy_(part);
      offset += part.numel();
    }
  }
}

// The flat range cast once to the parameters' dtype, then one multi-tensor copy into the
// parameters' pieces where LibTorch has it (2.x: a few launches for all of them; see
// common/torch_compat.h), else a copy per piece (1.13, the CPU build).
void scatter_flat(const FlatLayout& layout, const NamedParams& params, const Range& range,
                  const at::Tensor& flat) {
  c10::NoGradGuard no_grad;
  const std::vector<SlotPiece> pieces = pieces_in(layout, range);
  if (pieces.empty()) return;
  const at::ScalarType dtype = params[pieces.front().slot].second.scalar_type();
  const at::Tensor cast = flat.scalar_type() == dtype ? flat : flat.to(dtype);
  std::vector<at::Tensor> dst, src;
  for (const SlotPiece& piece : pieces) {
    const ParamSlot& slot = layout.slots[piece.slot];
    at::Tensor p = params[piece.slot].second.detach();
    const at::Tensor& from = p.scalar_type() == dtype ? cast : flat;  // (copy_ casts the odd one)
    src.push_back(from.narrow(0, slot.offset + piece.elements.begin - range.begin, piece.elements.size()));
    dst.push_back(p.view(-1).narrow(0, piece.elements.begin, piece.elements.size()));
  }
#if HYDRA_HAS_FOREACH_COPY
  at::_foreach_copy_(dst, src);
#else
  for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
#endif
}

}  // namespace hydra::parallel
