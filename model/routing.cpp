#include "model/routing.h"

#include <limits>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard / GradMode: ATen.h does not bring them in LibTorch 2.x

#include "common/errors.h"

namespace hydra::model {

Selection select_tokens(const at::Tensor& logits, const at::Tensor& eligible, int64_t k, RouteMode mode) {
  Selection s;
  const at::Tensor r = logits.detach();
  if (mode == RouteMode::kTopK) {
    const at::Tensor scores =
        eligible.defined() ? r.masked_fill(eligible.logical_not(), -std::numeric_limits<double>::infinity()) : r;
    // topk picks the tokens, sorting their indices restores position order.
    const at::Tensor top = std::get<1>(at::topk(scores, k, /*dim=*/1, /*largest=*/true, /*sorted=*/false));
    s.index = std::get<0>(at::sort(top, /*dim=*/1));
    s.selected = at::ones_like(s.index, s.index.options().dtype(at::kBool));
    s.member = at::zeros_like(r).scatter(1, s.index, 1.0);
    s.selected_count = s.index.numel();
    return s;
  }
  at::Tensor chosen = r > 0;  // sigmoid(r) > 0.5
  if (eligible.defined()) chosen = chosen.logical_and(eligible);
  // A stable sort of "not chosen" (0 before 1) lists the chosen tokens first, each group in
  // position order.
  // (The optional<bool> spells out the stable overload: a plain `true` binds to sort(dim, descending).)
  const at::Tensor order =
      std::get<1>(at::sort(chosen.logical_not().to(at::kInt), /*stable=*/c10::optional<bool>(true), /*dim=*/1));
  s.index = order;
  s.selected = chosen.gather(1, order);
  s.member = chosen.to(r.scalar_type());
  s.selected_count = chosen.sum().item<int64_t>();
  return s;
}

Selection select_chosen(const at::Tensor& logits, const at::Tensor& eligible) {
  HYDRA_CHECK(logits.dim() == 2 && logits.size(0) == 1, "select_chosen takes one sequence, got " << logits.sizes());
  Selection s;
  at::Tensor chosen = logits.detach() > 0;  // sigmoid(r) > 0.5, as select_tokens' threshold mode
  if (eligible.defined()) chosen = chosen.logical_and(eligible);
  s.index = chosen.select(0, 0).nonzero().view({1, -1});  // ascending: position order
  s.selected = at::ones_like(s.index, s.index.options().dtype(at::kBool));
  s.member = chosen.to(logits.scalar_type());
  s.selected_count = s.index.numel();
  return s;
}

std::vector<at::Tensor> apply_routed(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& logits,
                                     const Selection& selection, const RoutedFn& f) {
  const int64_t E = x.size(2);
  const at::Tensor index_e = selection.index.unsqueeze(-1).expand({-1, -1, E});
  const at::Tensor x_sub = x.gather(1, index_e);
  const at::Tensor pos_sub = positions.gather(1, selection.index);
  std::vector<at::Tensor> result = f(x_sub, pos_sub);
  const at::Tensor gate = at::sigmoid(logits.gather(1, selection.index)).unsqueeze(-1).to(x.scalar_type());
  at::Tensor update = x_sub + gate * (result[0] - x_sub);
  // Threshold mode also ran the unselected tokens: put their input back.
  if (selection.selected_count < selection.index.numel()) {
    update = at::where(selection.selected.unsqueeze(-1), update, x_sub);
  }
  return {x.scatter(1, index_e, update), result[1]};
}

at::Tensor router_entropy_sum(const at::Tensor& logits, const at::Tensor& eligible) {
  at::NoGradGuard no_grad;
  const at::Tensor r = logits.to(at::kFloat);
  // H(sigmoid(r)) = softplus(r) - r sigmoid(r), stable for large |r|.
  const at::Tensor h = at::softplus(r) - r * at::sigmoid(r);
  return eligible.defined() ? (h * eligible.to(at::kFloat)).sum() : h.sum();
}

at::Tensor router_aux_loss(const at::Tensor& logits, const Selection& selection, const at::Tensor& eligible) {
  // At least float32 (bfloat16 logits are upcast); float64 stays float64 for the gradient tests.
  const auto type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor r = logits.to(type);
  const at::Tensor target = selection.member.to(type);
  if (!eligible.defined()) return at::binary_cross_entropy_with_logits(r, target).to(logits.scalar_type());
  const at::Tensor w = eligible.to(type);
  const at::Tensor total = at::binary_cross_entropy_with_logits(r, target, w, /*pos_weight=*/{}, at::Reduction::Sum);
  return (total / w.sum().clamp_min(1.0)).to(logits.scalar_type());
}

}  // namespace hydra::model
