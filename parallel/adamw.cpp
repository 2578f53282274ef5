#include "parallel/adamw.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "common/errors.h"
#include "parallel/optimizer_kernels.h"

namespace hydra::parallel {

at::TensorOptions master_options(const NamedParams& params) {
  if (params.empty()) return at::TensorOptions().dtype(at::kFloat);
  const at::Tensor& p = params.front().second;
  return p.options().dtype(p.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

AdamWState make_adamw_state(const FlatLayout& layout, const NamedParams& params, const Range& range) {
  AdamWState s;
  s.range = range;
  const at::TensorOptions master = master_options(params);
  s.master = at::empty({range.size()}, master);
  gather_flat(layout, params, range, Source::kValue, s.master);
  s.exp_avg = at::zeros({range.size()}, master);
  s.exp_avg_sq = at::zeros({range.size()}, master);
  s.decay_mask = at::zeros({range.size()}, master.dtype(at::kByte));
  for (const SlotPiece& piece : pieces_in(layout, range)) {
    const ParamSlot& slot = layout.slots[piece.slot];
    if (slot.decay) {
      s.decay_mask.narrow(0, slot.offset + piece.elements.begin - range.begin, piece.elements.size()).fill_(1.0);
    }
  }
  s.step = at::zeros({}, master.dtype(at::kDouble));
  return s;
}

AdamWUpdate plan_adamw_update(const at::Tensor& steps_taken, const AdamWHyper& h, const StepGate& gate,
                              const at::TensorOptions& like) {
  c10::NoGradGuard no_grad;
  HYDRA_CHECK(h.lr.defined() && h.lr.dim() == 0, "AdamWHyper::lr must be a 0-dim tensor");
  AdamWUpdate u;
  // `apply` is 1 for an applied step and 0 for a skipped one; every coefficient that moves the
  // state is made neutral by it and a skipped step's gradient reads as 0, so each element
  // becomes x * 1 + 0: bitwise itself (masking the state with where() instead would cost
  // three more passes over it).
  u.apply = gate.finite.to(at::kDouble);
  u.finite = gate.finite;
  // The count of this update; at least 1, so that the (unused) corrections of a skipped first
  // step stay finite: 0 times a NaN would not be 0.
  const at::Tensor t = (steps_taken + u.apply).clamp_min_(1.0);
  const at::Tensor bias1 = at::rsub(at::pow(h.beta1, t), 1.0);  // 1 - b1^t (rsub: one launch)
  const at::Tensor bias2_sqrt = at::rsub(at::pow(h.beta2, t), 1.0).sqrt_();
  // In fp64 here, then in the master's dtype, in which the passes below would use them anyway
  // (converted once instead of in every kernel).
  const at::Tensor scalars = at::stack({gate.clip_factor.to(at::kDouble).reshape({}),
                                        u.apply * (h.beta1 - 1.0) + 1.0,  // beta1 exactly, or 1 (b - 1 + 1 is exact)
                                        u.apply * (h.beta2 - 1.0) + 1.0,
                                        u.apply * (h.lr * h.weight_decay),  // (lr * wd first: rounded as a host product was)
                                        u.apply * -h.lr / bias1,
                                        bias2_sqrt})
                                 .to(like.dtype().toScalarType());
  u.scalars = scalars;
  u.clip_factor = scalars[0];
  u.keep1 = scalars[1];
  u.keep2 = scalars[2];
  u.decay = scalars[3];
  u.neg_step_size = scalars[4];
  u.bias2_sqrt = scalars[5];
  return u;
}

void adamw_apply(AdamWState& s, const at::Tensor& grad, const AdamWHyper& h, const AdamWUpdate& u) {
  c10::NoGradGuard no_grad;
  s.step.add_(u.apply);
  if (fused_adamw_update(s, grad, h, u)) return;  // CUDA, fp32: one kernel (parallel/optimizer_kernels.h)
  // The clip factor folds into the one pass that also drops a non-finite gradient.
  const at::Tensor g = at::where(u.finite, grad * u.clip_factor, 0.0);
  // Decoupled weight decay on the decaying elements only.
  s.master.mul_(at::rsub(s.decay_mask * u.decay, 1.0));
  s.exp_avg.mul_(u.keep1).add_(g, 1.0 - h.beta1);
  s.exp_avg_sq.mul_(u.keep2).addcmul_(g, g, 1.0 - h.beta2);
  const at::Tensor denom = (s.exp_avg_sq.sqrt() / u.bias2_sqrt).add_(h.eps);
  s.master.addcdiv_(s.exp_avg * u.neg_step_size, denom);
}

void adamw_apply_params(AdamWState& s, const FlatLayout& layout, const NamedParams& params, const AdamWHyper& h,
                        const AdamWUpdate& u) {
  c10::NoGradGuard no_grad;
  if (fused_adamw_params(s, layout, params, h, u)) {
    s.step.add_(u.apply);
    return;
  }
  at::Tensor grad = at::empty({s.range.size()}, s.master.options());
  gather_flat(layout, params, s.range, Source::kGrad, grad);
  adamw_apply(s, grad, h, u);
  scatter_flat(layout, params, s.range, s.master);
}

void adamw_step(AdamWState& s, const at::Tensor& grad, const AdamWHyper& h, const StepGate& gate) {
  adamw_apply(s, grad, h, plan_adamw_update(s.step, h, gate, s.master.options()));
}

void adamw_step(AdamWState& state, const at::Tensor& grad, const AdamWHyper& hyper) {
  adamw_step(state, grad, hyper, always_apply(state.master.options()));
}

int64_t adamw_steps(const AdamWState& state) { return static_cast<int64_t>(state.step.item<double>()); }

void set_adamw_steps(AdamWState& state, int64_t steps) { state.step.fill_(static_cast<double>(steps)); }

}  // namespace hydra::parallel
