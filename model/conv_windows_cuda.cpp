// conv2_operand_cuda (conv_windows_cuda.h): an autograd Function over kernels/conv_windows.h.
#include "model/conv_windows_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/conv_windows.h"
#include "model/fused_ops_cuda.h"

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::ConvWindowsShape shape_of(const at::Tensor& x, const at::Tensor& weight, int64_t g, int64_t bias_columns) {
  kernels::ConvWindowsShape s;
  s.group_size = static_cast<int>(g);
  s.bias_columns = static_cast<int>(bias_columns);
  s.batch = x.size(0);
  s.seq = x.size(1);
  s.channels = static_cast<int>(x.size(2));
  s.kernel = static_cast<int>(weight.size(2));
  s.dtype = storage_of(x);
  s.param_dtype = storage_of(weight);
  return s;
}

class ConvWindowsFunction : public torch::autograd::Function<ConvWindowsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, int64_t g, int64_t bias_columns) {
    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor xs = with_even_rows(x);
    const at::Tensor w = weight.contiguous(), b = bias.contiguous();
    const kernels::ConvWindowsShape s = shape_of(xs, w, g, bias_columns);
    at::Tensor windows = at::empty({s.channels / g, s.batch * s.seq, g * s.kernel + bias_columns}, x.options());
    kernels::conv_windows_forward(s, xs.data_ptr(), xs.stride(1), w.data_ptr(), b.data_ptr(), windows.data_ptr(),
                                  at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward({xs, w, b});
    ctx->saved_data["g"] = g;
    ctx->saved_data["bias_columns"] = bias_columns;
    return {windows};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    const c10::cuda::CUDAGuard guard(x.device());
    const kernels::ConvWindowsShape s =
        shape_of(x, w, ctx->saved_data["g"].toInt(), ctx->saved_data["bias_columns"].toInt());
    if (!grads[0].defined()) return {at::zeros(x.sizes(), x.options()), at::zeros_like(w), at::zeros_like(b), {}, {}};
    const at::Tensor dwin = grads[0].to(x.scalar_type()).contiguous();
    at::Tensor dx = at::empty({s.batch, s.seq, s.channels}, x.options());
    at::Tensor dw = at::empty_like(w), db = at::empty_like(b);
    const size_t bytes = kernels::conv_windows_backward_workspace(s);
    at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
    kernels::conv_windows_backward(s, dwin.data_ptr(), x.data_ptr(), x.stride(1), w.data_ptr(), dx.data_ptr(),
                                   dw.data_ptr(), db.data_ptr(), ws.data_ptr(), bytes,
                                   at::cuda::getCurrentCUDAStream());
    return {dx, dw, db, {}, {}};
  }
};

}  // namespace

std::optional<at::Tensor> conv2_operand_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                             int64_t g, int64_t bias_columns) {
  if (!fused_kernels_apply({x}) || !fused_kernels_apply({weight, bias}) || x.device() != weight.device() ||
      x.dim() != 3 || weight.dim() != 3 || bias.dim() != 1 || weight.size(1) != 1 || weight.size(0) != x.size(2) ||
      bias.size(0) != x.size(2) || x.numel() == 0) {
    return std::nullopt;
  }
  if (!kernels::conv_windows_supported(shape_of(x, weight, g, bias_columns))) return std::nullopt;
  return ConvWindowsFunction::apply(x, weight, bias, g, bias_columns)[0];
}

}  // namespace hydra::model
