#include "parallel/tensor_parallel.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A summed copy of x over tp (x itself may be shared with autograd, so never in place).
at::Tensor summed(Communicator& tp, const at::Tensor& x) {
  at::Tensor y = x.clone(at::MemoryFormat::Contiguous);
  tp.all_reduce(y, ReduceOp::kSum);
  return y;
}

// The three region functions differ only in which direction sums.
enum Mode : int64_t { kCopy = 0, kReduce = 1, kBoth = 2 };

struct RegionFunction : torch::autograd::Function<RegionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* tp, int64_t mode) {
    // The communicator outlives the graph (tensor_parallel.h); an IValue holds it as an int.
    ctx->saved_data["tp"] = reinterpret_cast<int64_t>(tp);
    ctx->saved_data["mode"] = mode;
    // Identity forward returns the input itself; autograd then hands back a view of it
    // carrying this node, without copying.
    return mode == kCopy ? x : summed(*tp, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* tp = reinterpret_cast<Communicator*>(ctx->saved_data["tp"].toInt());
    const int64_t mode = ctx->saved_data["mode"].toInt();
    at::Tensor g = grads[0];
    if (g.defined() && mode != kReduce) g = summed(*tp, g);
    return {g, at::Tensor(), at::Tensor()};
  }
};

void check_split(const model::ProjectionSpec& spec, int64_t features, const char* what, int parts) {
  if (features % parts != 0 || (features / parts) % spec.granularity != 0) {
    HYDRA_FAIL(common::ConfigError, "tensor parallelism: " << spec.name << " has " << features << " " << what
                                        << " features in units of " << spec.granularity
                                        << ", which do not split evenly over parallel.tp = " << parts);
  }
}

}  // namespace

at::Tensor copy_to_region(Communicator& tp, const at::Tensor& x) { return RegionFunction::apply(x, &tp, int64_t{kCopy}); }
at::Tensor reduce_from_region(Communicator& tp, const at::Tensor& x) {
  return RegionFunction::apply(x, &tp, int64_t{kReduce});
}
at::Tensor sum_in_region(Communicator& tp, const at::Tensor& x) { return RegionFunction::apply(x, &tp, int64_t{kBoth}); }

ColumnParallelProjection::ColumnParallelProjection(const model::ProjectionSpec& spec, Communicator& tp) {
  check_split(spec, spec.out, "output", tp.size());
  const int64_t rows = spec.out / tp.size();
  c10::NoGradGuard no_grad;
  const at::Tensor full = model::init_projection_weight(spec);
  weight = register_parameter("weight", full.narrow(0, tp.rank() * rows, rows).clone());
  if (spec.bias) bias = register_parameter("bias", at::full({rows}, spec.bias_init));
}

at::Tensor ColumnParallelProjection::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

RowParallelProjection::RowParallelProjection(const model::ProjectionSpec& spec, Communicator& tp_) : tp(tp_) {
  check_split(spec, spec.in, "input", tp.size());
  const int64_t cols = spec.in / tp.size();
  c10::NoGradGuard no_grad;
  const at::Tensor full = model::init_projection_weight(spec);
  weight = register_parameter("weight", full.narrow(1, tp.rank() * cols, cols).clone(at::MemoryFormat::Contiguous));
  if (spec.bias) bias = register_parameter("bias", at::full({spec.out}, spec.bias_init));
}

at::Tensor RowParallelProjection::forward(const at::Tensor& x) {
  const at::Tensor y = reduce_from_region(tp, at::linear(x, weight));
  return bias.defined() ? y + bias : y;
}

model::ProjectionFactory make_tp_projection_factory(Communicator& tp) {
  Communicator* group = &tp;
  return [group](const model::ProjectionSpec& spec) -> model::Projection {
    switch (spec.role) {
      case model::ShardRole::kColumn: return std::make_shared<ColumnParallelProjection>(spec, *group);
      case model::ShardRole::kRow: return std::make_shared<RowParallelProjection>(spec, *group);
      case model::ShardRole::kReplicated: break;
    }
    return std::make_shared<model::LinearProjection>(spec);
  };
}

model::TensorParallelHooks make_tp_hooks(Communicator& tp) {
  Communicator* group = &tp;
  model::TensorParallelHooks hooks;
  hooks.size = tp.size();
  hooks.rank = tp.rank();
  hooks.enter = [group](const at::Tensor& x) { return copy_to_region(*group, x); };
  hooks.reduce = [group](const at::Tensor& x) { return reduce_from_region(*group, x); };
  hooks.sum_partial = [group](const at::Tensor& x) { return sum_in_region(*group, x); };
  hooks.sum_grad = [group](at::Tensor& param) {
    // Runs on the gradient before it is accumulated into .grad, once per backward pass that
    // reaches the parameter (each recompute of a checkpointed block too: sums are linear).
    param.register_hook([group](at::Tensor grad) -> at::Tensor { return summed(*group, grad); });
  };
  hooks.cross_entropy = [group](const at::Tensor& logits, const at::Tensor& targets, int64_t vocab_begin) {
    return vocab_parallel_cross_entropy(*group, logits, targets, vocab_begin);
  };
  hooks.max_over_group = [group](at::Tensor& t) { group->all_reduce(t, ReduceOp::kMax); };
  hooks.sum_over_group = [group](at::Tensor& t) { group->all_reduce(t, ReduceOp::kSum); };
  return hooks;
}

at::Tensor vocab_parallel_cross_entropy(Communicator& tp, const at::Tensor& logits, const at::Tensor& targets,
                                        int64_t vocab_begin) {
  const auto type = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t v_local = logits.size(-1);
  const at::Tensor x = logits.to(type).reshape({-1, v_local});
  const at::Tensor t = targets.reshape({-1});
  // The global row max: a constant shift, so it needs no gradient.
  at::Tensor row_max = x.detach().amax(-1, /*keepdim=*/true).contiguous();
  tp.all_reduce(row_max, ReduceOp::kMax);
  const at::Tensor shifted = x - row_max;
  // Every rank ends up with the whole loss and back-propagates it in full, so the sums are
  // all-reduce forward / identity backward: each rank's logits get their exact gradient.
  const at::Tensor sum_exp = reduce_from_region(tp, shifted.exp().sum(-1));
  const at::Tensor valid = t != -100;
  const at::Tensor mine = valid & (t >= vocab_begin) & (t < vocab_begin + v_local);
  const at::Tensor local_t = ((t - vocab_begin) * mine).unsqueeze(1);
  // where, not multiply: a rank whose slice is all padding gathers -inf, and -inf * 0 is NaN.
  const at::Tensor picked = at::where(mine, shifted.gather(1, local_t).squeeze(1), at::zeros({}, shifted.options()));
  const at::Tensor target_logit = reduce_from_region(tp, picked);
  const at::Tensor per_token = at::where(valid, sum_exp.log() - target_logit, at::zeros({}, shifted.options()));
  // Mean over the non-ignored targets, like nll_loss(..., ignore_index = -100).
  return per_token.sum() / valid.sum().to(type);
}

}  // namespace hydra::parallel
