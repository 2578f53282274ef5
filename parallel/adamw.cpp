#include "parallel/adamw.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

namespace hydra::parallel {

AdamWState make_adamw_state(const FlatLayout& layout, const NamedParams& params, const Range& range) {
  AdamWState s;
  s.range = range;
  // fp32 on the parameters' device, whatever their dtype.
  const auto fp32 = params.empty() ? at::TensorOptions().dtype(at::kFloat)
                                   : params.front().second.options().dtype(at::kFloat);
  s.master = at::empty({range.size()}, fp32);
  gather_flat(layout, params, range, Source::kValue, s.master);
  s.exp_avg = at::zeros({range.size()}, fp32);
  s.exp_avg_sq = at::zeros({range.size()}, fp32);
  s.decay_mask = at::zeros({range.size()}, fp32);
  for (const SlotPiece& piece : pieces_in(layout, range)) {
    const ParamSlot& slot = layout.slots[piece.slot];
    if (slot.decay) {
      s.decay_mask.narrow(0, slot.offset + piece.elements.begin - range.begin, piece.elements.size()).fill_(1.0);
    }
  }
  return s;
}

void adamw_step(AdamWState& s, const at::Tensor& grad, const AdamWHyper& h) {
  c10::NoGradGuard no_grad;
  s.step += 1;
  const double bias1 = 1.0 - std::pow(h.beta1, static_cast<double>(s.step));
  const double bias2 = 1.0 - std::pow(h.beta2, static_cast<double>(s.step));
  // Decoupled weight decay on the decaying elements only.
  s.master.mul_(1.0 - h.lr * h.weight_decay * s.decay_mask);
  s.exp_avg.mul_(h.beta1).add_(grad, 1.0 - h.beta1);
  s.exp_avg_sq.mul_(h.beta2).addcmul_(grad, grad, 1.0 - h.beta2);
  const at::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(h.eps);
  s.master.addcdiv_(s.exp_avg, denom, -h.lr / bias1);
}

}  // namespace hydra::parallel
