// One autograd Function for the per-head RMS norm (head_norm_node.h).
#include "model/head_norm_node.h"

#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool low_precision(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// Forward, as rms_norm (layers.cpp) computes it on the [..., H, head_size] view:
//   xf = x in float32 (half/bf16 inputs), rs = rsqrt(mean(xf^2) + eps), n = xf rs,
//   nc = n in x's type, y = nc w.
// Backward, for gradient gy of y:
//   dw = sum over rows of gy nc;  dn = gy w, rounded to nc's type as autograd would, in float32;
//   dxf = rs (dn - n mean(dn n))  (the rsqrt's gradient folded in);  dx = dxf in x's type.
class HeadRmsNormFunction : public torch::autograd::Function<HeadRmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, int64_t head_size,
                            double eps) {
    std::vector<int64_t> split(x.sizes().begin(), x.sizes().end() - 1);
    split.push_back(-1);
    split.push_back(head_size);
    const bool low = low_precision(x.scalar_type());
    const at::Tensor xv = x.reshape(split);
    const at::Tensor xf = low ? xv.to(at::kFloat) : xv;
    const at::Tensor rs = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
    const at::Tensor n = xf * rs;
    const at::Tensor nc = low ? n.to(x.scalar_type()) : n;
    const at::Tensor w = weight.view({-1, head_size});
    ctx->save_for_backward({n, nc, rs, weight});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["head_size"] = head_size;
    return (nc * w).view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};  // off the loss's path
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &n = saved[0], &nc = saved[1], &rs = saved[2], &weight = saved[3];
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const int64_t head_size = ctx->saved_data["head_size"].toInt();
    const at::Tensor w = weight.view({-1, head_size});
    const at::Tensor gy = grads[0].reshape(nc.sizes());
    const at::Tensor dw =
        (gy * nc).reshape({-1, w.size(0), head_size}).sum(0).view(weight.sizes()).to(weight.scalar_type());
    // Through y = nc w: the gradient of nc has nc's type (autograd casts it so), then float32.
    const at::Tensor dn = (gy * w).to(nc.scalar_type()).to(n.scalar_type());
    const at::Tensor dxf = at::addcmul(dn, n, (dn * n).mean(-1, /*keepdim=*/true), -1.0).mul_(rs);
    const at::Tensor dx = dxf.to(x_dtype).view(grads[0].sizes());
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

torch::Tensor head_rms_norm_node(const torch::Tensor& x, const torch::Tensor& weight, int64_t head_size, double eps) {
  return HeadRmsNormFunction::apply(x, weight, head_size, eps);
}

}  // namespace hydra::model
