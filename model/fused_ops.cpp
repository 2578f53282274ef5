// The fused ops of fused_ops.h: autograd Functions whose forward and backward run the CUDA
// kernels (fused_ops_cuda.h, CUDA build) when they apply and ATen formulas otherwise.
#include "model/fused_ops.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include "common/errors.h"
#if HYDRA_CUDA
#include "model/fused_ops_cuda.h"
#endif

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool low_precision(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// The kernels take CUDA tensors of one dtype, bfloat16 or float32.
bool kernels_apply(std::initializer_list<at::Tensor> tensors) {
#if HYDRA_CUDA
  return fused_kernels_apply(tensors);
#else
  (void)tensors;
  return false;
#endif
}

bool rope_kernels_apply(const at::Tensor& x, const at::Tensor& positions) {
  return x.dim() == 4 && positions.scalar_type() == at::kLong && positions.device() == x.device() &&
         kernels_apply({x});
}

// ---------------------------------------------------------------------------------------------
// ATen formulas. The norms view x as [rows / groups, groups, n] so the weight [groups, n]
// broadcasts; rstd keeps the keepdim shape [rows / groups, groups, 1].

// layers.cpp rms_norm: normalise in float32 (float64 stays float64), round to x's type, then
// times the weight. Returns {y, rstd}.
std::tuple<at::Tensor, at::Tensor> norm_forward(const at::Tensor& x, const at::Tensor& weight, int64_t groups,
                                                double eps) {
  const int64_t n = weight.numel() / groups;
  const bool low = low_precision(x.scalar_type());
  const at::Tensor xv = x.reshape({-1, groups, n});
  const at::Tensor xf = low ? xv.to(at::kFloat) : xv;
  const at::Tensor rstd = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  const at::Tensor normed = xf * rstd;
  const at::Tensor rounded = low ? normed.to(x.scalar_type()) : normed;
  return {(rounded * weight.view({groups, n})).reshape(x.sizes()), rstd};
}

// For y = round(xhat) w, xhat = x rstd and the gradient dy of y:
//   dw = sum over rows of dy round(xhat);  g = dy w, in x's type as autograd holds it;
//   dx = rstd (g - xhat mean(g xhat)), in x's type.
std::tuple<at::Tensor, at::Tensor> norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                                                 const at::Tensor& rstd, int64_t groups, bool need_dw) {
  const int64_t n = weight.numel() / groups;
  const bool low = low_precision(x.scalar_type());
  const at::Tensor xv = x.reshape({-1, groups, n});
  const at::Tensor xhat = (low ? xv.to(at::kFloat) : xv) * rstd;
  const at::Tensor rounded = low ? xhat.to(x.scalar_type()) : xhat;
  const at::Tensor gy = dy.reshape({-1, groups, n});
  at::Tensor dw;
  if (need_dw) dw = (gy * rounded).sum(0).reshape(weight.sizes()).to(weight.scalar_type());
  const at::Tensor g = (gy * weight.view({groups, n})).to(rounded.scalar_type()).to(xhat.scalar_type());
  const at::Tensor dxf = (g - xhat * (g * xhat).mean(-1, /*keepdim=*/true)) * rstd;
  return {dxf.to(x.scalar_type()).reshape(x.sizes()), dw};
}

// apply_rope's cos and sin [B, S, 1, D/2] in x's type, from angles in float32 (float64 for
// float64 x).
std::tuple<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& x, const at::Tensor& positions, double theta) {
  const int64_t D = x.size(-1), half = D / 2;
  const auto angle_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = at::TensorOptions().dtype(angle_type).device(x.device());
  const at::Tensor inv_freq = at::pow(theta, -at::arange(0, half, opts) * (2.0 / static_cast<double>(D)));
  const at::Tensor angles = positions.to(angle_type).unsqueeze(-1).unsqueeze(-1) * inv_freq;
  return {at::cos(angles).to(x.scalar_type()), at::sin(angles).to(x.scalar_type())};
}

// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin); inverse: the rotation by -angle.
at::Tensor rope_rotate(const at::Tensor& x, const at::Tensor& positions, double theta, bool inverse) {
  const auto [cos, sin] = rope_cos_sin(x, positions, theta);
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  if (inverse) return at::cat({x1 * cos + x2 * sin, x2 * cos - x1 * sin}, -1);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

void check_rope(const at::Tensor& x, const at::Tensor& positions) {
  HYDRA_CHECK(x.dim() == 4 && x.size(-1) % 2 == 0 && positions.dim() == 2 && positions.size(0) == x.size(0) &&
                  positions.size(1) == x.size(1),
              "rope: x " << x.sizes() << " (want [B, S, heads, even D]), positions " << positions.sizes()
                         << " (want [B, S])");
}

// ---------------------------------------------------------------------------------------------
// The Functions. Each decides once, in its forward, whether the kernels run, and records it:
// the backward must read the saved state (rstd's layout) the way the forward wrote it.

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, int64_t groups,
                            double eps) {
    const bool kernel = kernels_apply({x, weight});
    at::Tensor y, rstd;
#if HYDRA_CUDA
    if (kernel) std::tie(y, rstd) = rms_norm_forward_cuda(x, weight, groups, eps);
#endif
    if (!kernel) std::tie(y, rstd) = norm_forward(x, weight, groups, eps);
    ctx->save_for_backward({x, weight, rstd});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["kernel"] = kernel;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const bool need_dw = ctx->needs_input_grad(1);
    at::Tensor dx, dw;
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      std::tie(dx, dw) = rms_norm_backward_cuda(grads[0], x, weight, rstd, groups, need_dw);
      return {dx, dw, at::Tensor(), at::Tensor()};
    }
#endif
    std::tie(dx, dw) = norm_backward(grads[0], x, weight, rstd, groups, need_dw);
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

class AddRmsNormFunction : public torch::autograd::Function<AddRmsNormFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y, double alpha,
                               const at::Tensor& weight, double eps) {
    const bool kernel = kernels_apply({x, y, weight});
    at::Tensor h, n, rstd;
#if HYDRA_CUDA
    if (kernel) std::tie(h, n, rstd) = add_rms_norm_forward_cuda(x, y, alpha, weight, eps);
#endif
    if (!kernel) {
      h = x + alpha * y;  // the reference's two roundings: alpha * y, then the sum
      std::tie(n, rstd) = norm_forward(h, weight, 1, eps);
    }
    ctx->save_for_backward({h, weight, rstd});  // h is an output: saved without a copy
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["y_dtype"] = static_cast<int64_t>(y.scalar_type());
    return {h, n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &weight = saved[1], &rstd = saved[2];
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const bool need_dw = ctx->needs_input_grad(2);  // edges count tensor arguments only: x, y, weight
    at::Tensor dx, dy, dw;
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      std::tie(dx, dy, dw) = add_rms_norm_backward_cuda(grads[0], grads[1], h, weight, rstd, alpha, true, need_dw);
      return {dx, dy, at::Tensor(), dw, at::Tensor()};
    }
#endif
    at::Tensor dh_norm;
    std::tie(dh_norm, dw) = norm_backward(grads[1], h, weight, rstd, 1, need_dw);
    const at::Tensor dh = grads[0] + dh_norm;
    dx = dh.to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    dy = (alpha * dh).to(static_cast<at::ScalarType>(ctx->saved_data["y_dtype"].toInt()));
    return {dx, dy, at::Tensor(), dw, at::Tensor()};
  }
};

// {x, rms_norm(x)}: returning x itself (autograd hands out a view of it with this node as its
// history) makes this node the one place where x's two gradients meet, so the backward adds the
// other uses' gradient dx_other inside the norm's backward pass (dx = dx_other + norm's dx, the
// sum autograd would form, rounded the same) instead of autograd adding them in a separate pass.
class RmsNormWithInputFunction : public torch::autograd::Function<RmsNormWithInputFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const bool kernel = kernels_apply({x, weight});
    at::Tensor y, rstd;
#if HYDRA_CUDA
    if (kernel) std::tie(y, rstd) = rms_norm_forward_cuda(x, weight, 1, eps);
#endif
    if (!kernel) std::tie(y, rstd) = norm_forward(x, weight, 1, eps);
    ctx->save_for_backward({x, weight, rstd});
    ctx->saved_data["kernel"] = kernel;
    return {x, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const at::Tensor &dx_other = grads[0], &dy = grads[1];
    const bool need_dw = ctx->needs_input_grad(1);
    if (!dy.defined()) return {dx_other, at::Tensor(), at::Tensor()};
    at::Tensor dx, dw;
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      if (dx_other.defined()) {
        std::tie(dx, std::ignore, dw) = add_rms_norm_backward_cuda(dx_other, dy, x, weight, rstd, 1.0, false, need_dw);
      } else {
        std::tie(dx, dw) = rms_norm_backward_cuda(dy, x, weight, rstd, 1, need_dw);
      }
      return {dx, dw, at::Tensor()};
    }
#endif
    std::tie(dx, dw) = norm_backward(dy, x, weight, rstd, 1, need_dw);
    if (dx_other.defined()) dx = dx_other + dx;
    return {dx, dw, at::Tensor()};
  }
};

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& positions, double theta) {
    check_rope(x, positions);
    const bool kernel = rope_kernels_apply(x, positions);
    at::Tensor out;
#if HYDRA_CUDA
    if (kernel) out = rope_cuda(x, positions, theta, /*inverse=*/false);
#endif
    if (!kernel) out = rope_rotate(x, positions, theta, /*inverse=*/false);
    ctx->save_for_backward({positions});
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["kernel"] = kernel;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor positions = ctx->get_saved_variables()[0];
    const double theta = ctx->saved_data["theta"].toDouble();
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      return {rope_cuda(grads[0], positions, theta, /*inverse=*/true), at::Tensor(), at::Tensor()};
    }
#endif
    return {rope_rotate(grads[0], positions, theta, /*inverse=*/true), at::Tensor(), at::Tensor()};
  }
};

class RopeConcatFunction : public torch::autograd::Function<RopeConcatFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, const at::Tensor& positions,
                            double theta) {
    check_rope(b, positions);
    const int64_t heads = a.size(2);
    HYDRA_CHECK(a.dim() == 4 && a.sizes().slice(0, 2) == b.sizes().slice(0, 2) && (b.size(2) == heads || b.size(2) == 1),
                "rope_concat: a " << a.sizes() << " (want [B, S, heads, d_a]), b " << b.sizes()
                                  << " (want [B, S, heads or 1, D])");
    const bool kernel = rope_kernels_apply(b, positions) && kernels_apply({a, b});
    at::Tensor out;
#if HYDRA_CUDA
    if (kernel) out = rope_concat_forward_cuda(a, b, positions, theta);
#endif
    if (!kernel) {
      const at::Tensor rotated = rope_rotate(b, positions, theta, /*inverse=*/false);
      out = at::cat({a, rotated.expand({b.size(0), b.size(1), heads, b.size(3)})}, -1);
    }
    ctx->save_for_backward({positions});
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["d_a"] = a.size(3);
    ctx->saved_data["b_heads"] = b.size(2);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor positions = ctx->get_saved_variables()[0];
    const double theta = ctx->saved_data["theta"].toDouble();
    const int64_t d_a = ctx->saved_data["d_a"].toInt(), b_heads = ctx->saved_data["b_heads"].toInt();
    const at::Tensor& g = grads[0];
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      const auto [da, db] = rope_concat_backward_cuda(g, d_a, b_heads, positions, theta);
      return {da, db, at::Tensor(), at::Tensor()};
    }
#endif
    at::Tensor gb = g.narrow(-1, d_a, g.size(-1) - d_a);
    if (b_heads == 1 && g.size(2) != 1) gb = gb.sum(2, /*keepdim=*/true);
    return {g.narrow(-1, 0, d_a), rope_rotate(gb, positions, theta, /*inverse=*/true), at::Tensor(), at::Tensor()};
  }
};

class RmsNormRopeFunction : public torch::autograd::Function<RmsNormRopeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& positions, double theta, double eps) {
    check_rope(x, positions);
    HYDRA_CHECK(weight.numel() == x.size(-1), "rms_norm_rope: weight " << weight.sizes() << " for x " << x.sizes());
    const bool kernel = rope_kernels_apply(x, positions) && kernels_apply({x, weight});
    at::Tensor out, rstd;
#if HYDRA_CUDA
    if (kernel) std::tie(out, rstd) = rms_norm_rope_forward_cuda(x, weight, positions, theta, eps);
#endif
    if (!kernel) {
      at::Tensor normed;
      std::tie(normed, rstd) = norm_forward(x, weight, 1, eps);
      out = rope_rotate(normed, positions, theta, /*inverse=*/false);
    }
    ctx->save_for_backward({x, weight, positions, rstd});
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["kernel"] = kernel;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &positions = saved[2], &rstd = saved[3];
    const double theta = ctx->saved_data["theta"].toDouble();
    const bool need_dw = ctx->needs_input_grad(1);
    at::Tensor dx, dw;
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      std::tie(dx, dw) = rms_norm_rope_backward_cuda(grads[0], x, weight, positions, rstd, theta, need_dw);
      return {dx, dw, at::Tensor(), at::Tensor(), at::Tensor()};
    }
#endif
    const at::Tensor dnormed = rope_rotate(grads[0], positions, theta, /*inverse=*/true);
    std::tie(dx, dw) = norm_backward(dnormed, x, weight, rstd, 1, need_dw);
    return {dx, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& u) {
    HYDRA_CHECK(g.sizes() == u.sizes(), "swiglu: g " << g.sizes() << ", u " << u.sizes());
    const bool kernel = kernels_apply({g, u});
    at::Tensor out;
#if HYDRA_CUDA
    if (kernel) out = swiglu_forward_cuda(g, u);
#endif
    if (!kernel) out = at::silu(g) * u;
    ctx->save_for_backward({g, u});
    ctx->saved_data["kernel"] = kernel;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1];
#if HYDRA_CUDA
    if (ctx->saved_data["kernel"].toBool()) {
      auto [dg, du] = swiglu_backward_cuda(g, u, grads[0]);
      return {dg, du};
    }
#endif
    // out = s u, s = silu(g): ds = dout u, du = dout s, dg = silu'(g) ds.
    const at::Tensor du = (grads[0] * at::silu(g)).to(u.scalar_type());
    const at::Tensor dg = at::silu_backward(grads[0] * u, g).to(g.scalar_type());
    return {dg, du};
  }
};

}  // namespace

torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  HYDRA_CHECK(x.dim() >= 1 && weight.numel() == x.size(-1), "rms_norm: weight " << weight.sizes() << " for x " << x.sizes());
  return RmsNormFunction::apply(x, weight, 1, eps);
}

torch::Tensor fused_grouped_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups, double eps) {
  HYDRA_CHECK(groups > 0 && x.dim() >= 1 && weight.numel() == groups * x.size(-1) &&
                  (x.numel() / std::max<int64_t>(x.size(-1), 1)) % groups == 0,
              "grouped rms_norm: weight " << weight.sizes() << " in " << groups << " groups for x " << x.sizes());
  return RmsNormFunction::apply(x, weight, groups, eps);
}

torch::Tensor fused_head_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size, double eps) {
  HYDRA_CHECK(head_size > 0 && x.size(-1) % head_size == 0 && weight.numel() == x.size(-1),
              "head_rms_norm: x " << x.sizes() << ", weight " << weight.sizes() << ", head size " << head_size);
  // [..., H * hs] -> [..., H, hs]: row r of the [rows, hs] view is head r % H.
  std::vector<int64_t> split(x.sizes().begin(), x.sizes().end() - 1);
  split.push_back(x.size(-1) / head_size);
  split.push_back(head_size);
  return fused_grouped_rms_norm(x.reshape(split), weight, x.size(-1) / head_size, eps).reshape(x.sizes());
}

std::tuple<torch::Tensor, torch::Tensor> fused_add_rms_norm(const torch::Tensor& x, const torch::Tensor& y,
                                                            double alpha, const torch::Tensor& weight, double eps) {
  HYDRA_CHECK(x.sizes() == y.sizes() && weight.numel() == x.size(-1),
              "add_rms_norm: x " << x.sizes() << ", y " << y.sizes() << ", weight " << weight.sizes());
  const variable_list out = AddRmsNormFunction::apply(x, y, alpha, weight, eps);
  return {out[0], out[1]};
}

std::tuple<torch::Tensor, torch::Tensor> fused_rms_norm_with_input(const torch::Tensor& x, const torch::Tensor& weight,
                                                                   double eps) {
  HYDRA_CHECK(weight.numel() == x.size(-1), "rms_norm: x " << x.sizes() << ", weight " << weight.sizes());
  const variable_list out = RmsNormWithInputFunction::apply(x, weight, eps);
  return {out[0], out[1]};
}

torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& positions, double theta) {
  return RopeFunction::apply(x, positions, theta);
}

torch::Tensor fused_rope_concat(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& positions,
                                double theta) {
  return RopeConcatFunction::apply(a, b, positions, theta);
}

torch::Tensor fused_rms_norm_rope(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& positions,
                                  double theta, double eps) {
  return RmsNormRopeFunction::apply(x, weight, positions, theta, eps);
}

torch::Tensor fused_swiglu(const torch::Tensor& g, const torch::Tensor& u) { return SwigluFunction::apply(g, u); }

}  // namespace hydra::model
