#include "model/same_input_projections.h"

#include <algorithm>

#include <ATen/core/grad_mode.h>  // at::NoGradGuard, at::GradMode (not from ATen.h in LibTorch 2.x)
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

variable_list same_input_forward(AutogradContext* ctx, const at::Tensor& x, const variable_list& weights) {
  variable_list saved{x};
  saved.insert(saved.end(), weights.begin(), weights.end());
  ctx->save_for_backward(saved);
  variable_list out;
  for (const at::Tensor& w : weights) out.push_back(at::linear(x, w));
  return out;
}

// Gradients of x, then of each weight. The products run in the outputs' dtype, which is x's and
// the weights' unless autocast chose another in the forward (the engine casts each returned
// gradient to its input's dtype).
variable_list same_input_backward(AutogradContext* ctx, const variable_list& grads) {
  const variable_list saved = ctx->get_saved_variables();
  const at::Tensor& x = saved[0];
  const at::Tensor x2 = x.reshape({-1, x.size(-1)});
  variable_list result(saved.size());
  at::Tensor dx;  // [rows, in]
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) continue;  // an output nobody used
    const at::Tensor dy = grads[i].reshape({-1, saved[1 + i].size(0)});
    const at::Tensor w = saved[1 + i].to(dy.scalar_type());
    if (ctx->needs_input_grad(0)) dx = dx.defined() ? dx.addmm_(dy, w) : at::mm(dy, w);
    if (ctx->needs_input_grad(1 + i)) result[1 + i] = at::mm(dy.t(), x2.to(dy.scalar_type()));
  }
  if (dx.defined()) result[0] = dx.view(x.sizes());
  return result;
}

// One Function per count of weights: LibTorch's custom Functions give each tensor argument its
// own graph edge (not tensors inside a vector), and 1.13 takes no undefined tensor arguments.
class SameInputLinear2 : public torch::autograd::Function<SameInputLinear2> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w0, const at::Tensor& w1) {
    return same_input_forward(ctx, x, {w0, w1});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return same_input_backward(ctx, grads); }
};

class SameInputLinear3 : public torch::autograd::Function<SameInputLinear3> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w0, const at::Tensor& w1,
                               const at::Tensor& w2) {
    return same_input_forward(ctx, x, {w0, w1, w2});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return same_input_backward(ctx, grads); }
};

// [W_1; W_2; ...] as a view of the storage the weights share when they are its consecutive row
// blocks (pack_same_input_weights), else undefined.
at::Tensor packed_weights(const variable_list& w) {
  const at::Tensor& first = w.front();
  if (!first.defined() || first.dim() != 2 || !first.is_contiguous()) return {};
  int64_t rows = first.size(0);
  for (size_t i = 1; i < w.size(); ++i) {
    const at::Tensor& prev = w[i - 1];
    if (!w[i].defined() || w[i].dim() != 2 || !w[i].is_contiguous() || w[i].size(1) != first.size(1) ||
        w[i].scalar_type() != first.scalar_type() || !w[i].storage().is_alias_of(first.storage()) ||
        w[i].storage_offset() != prev.storage_offset() + prev.numel()) {
      return {};
    }
    rows += w[i].size(0);
  }
  return first.as_strided({rows, first.size(1)}, {first.size(1), 1}, first.storage_offset());
}

}  // namespace

bool pack_same_input_weights(const std::vector<ProjectionImpl*>& projections) {
  variable_list w;
  for (ProjectionImpl* p : projections) w.push_back(p->plain_weight());
  if (w.size() < 2) return false;
  std::vector<int64_t> rows;
  for (const at::Tensor& t : w) {
    if (!t.defined() || t.dim() != 2 || t.size(1) != w[0].size(1) || t.scalar_type() != w[0].scalar_type() ||
        t.device() != w[0].device()) {
      return false;
    }
    rows.push_back(t.size(0));
  }
  at::NoGradGuard no_grad;
  const at::Tensor packed = at::cat(w, 0);  // a new tensor: the weights' values, row blocks in order
  int64_t offset = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    // set_data keeps the parameter object (its name, requires_grad, any reference to it) and
    // swaps the storage under it for the block's view.
    w[i].set_data(packed.narrow(0, offset, rows[i]));
    offset += rows[i];
  }
  return true;
}

std::vector<torch::Tensor> project_same_input(const torch::Tensor& x, const std::vector<ProjectionImpl*>& projections) {
  variable_list w;
  for (ProjectionImpl* p : projections) w.push_back(p->plain_weight());
  const bool plain = std::all_of(w.begin(), w.end(), [](const at::Tensor& t) { return t.defined(); });
  if (plain && !at::GradMode::is_enabled()) {
    if (const at::Tensor packed = packed_weights(w); packed.defined()) {
      std::vector<int64_t> sizes;
      for (const at::Tensor& t : w) sizes.push_back(t.size(0));
      return at::linear(x, packed).split_with_sizes(sizes, -1);
    }
  }
  if (plain && w.size() == 2) return SameInputLinear2::apply(x, w[0], w[1]);
  if (plain && w.size() == 3) return SameInputLinear3::apply(x, w[0], w[1], w[2]);
  std::vector<torch::Tensor> out;
  for (ProjectionImpl* p : projections) out.push_back(p->forward(x));
  return out;
}

}  // namespace hydra::model
