// CUDA glue of the fused ops (fused_ops_cuda.h): tensors to kernel launchers.
#include "model/fused_ops_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/errors.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace hydra::model {
namespace {

// The tensor in `like`'s dtype, contiguous (no copy when it already is both).
at::Tensor as_contiguous(const at::Tensor& t, const at::Tensor& like) {
  return t.to(like.scalar_type()).contiguous();
}

kernels::RmsNormShape norm_shape(const at::Tensor& x, int64_t n, int64_t groups, double eps) {
  kernels::RmsNormShape s;
  s.n = static_cast<int>(n);
  s.rows = n > 0 ? x.numel() / n : 0;
  s.groups = static_cast<int>(groups);
  s.eps = static_cast<float>(eps);
  s.dtype = storage_of(x);
  return s;
}

kernels::RopeShape rope_shape(const at::Tensor& x, double theta) {
  kernels::RopeShape s;
  s.tokens = x.size(0) * x.size(1);
  s.heads = static_cast<int>(x.size(2));
  s.head_dim = static_cast<int>(x.size(3));
  s.theta = theta;
  s.dtype = storage_of(x);
  return s;
}

// The weight gradient's output and workspace for a backward launch of the norm's shape (both
// undefined, and nothing asked of the kernels, when the weight needs no gradient).
struct WeightGradBuffers {
  at::Tensor dweight, workspace;
  kernels::RmsNormWeightGrad out;
};

WeightGradBuffers weight_grad_buffers(const kernels::RmsNormShape& s, const at::Tensor& weight, bool need_dw) {
  WeightGradBuffers b;
  if (!need_dw) return b;
  b.dweight = at::empty(weight.sizes(), weight.options());
  const size_t bytes = kernels::rms_norm_weight_grad_workspace(s);
  b.workspace = at::empty({static_cast<int64_t>(bytes)}, weight.options().dtype(at::kByte));
  b.out = {b.dweight.data_ptr(), b.workspace.data_ptr(), bytes};
  return b;
}

}  // namespace

kernels::StorageType storage_of(const at::Tensor& t) {
  HYDRA_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kFloat,
              "fused kernels: dtype " << t.scalar_type() << " (want bfloat16 or float32)");
  return t.scalar_type() == at::kBFloat16 ? kernels::StorageType::kBFloat16 : kernels::StorageType::kFloat32;
}

at::Tensor with_even_rows(const at::Tensor& x) {
  const bool even =
      x.dim() == 3 && x.stride(2) == 1 && x.stride(1) >= x.size(2) && x.stride(0) == x.size(1) * x.stride(1);
  return even ? x : x.contiguous();
}

at::Tensor incoming_gradient(const at::Tensor& g, at::IntArrayRef sizes, const at::Tensor& like) {
  return g.defined() ? g.to(like.scalar_type()).contiguous() : at::zeros(sizes, like.options());
}

bool fused_kernels_apply(std::initializer_list<at::Tensor> tensors) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || !t.is_cuda()) return false;
    if (first == nullptr) {
      if (t.scalar_type() != at::kBFloat16 && t.scalar_type() != at::kFloat) return false;
      first = &t;
    } else if (t.scalar_type() != first->scalar_type() || t.device() != first->device()) {
      return false;
    }
  }
  return first != nullptr;
}

std::tuple<at::Tensor, at::Tensor> rms_norm_forward_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                         int64_t groups, double eps) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const auto s = norm_shape(x, x.size(-1), groups, eps);
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor rstd = at::empty({s.rows}, x.options().dtype(at::kFloat));
  kernels::rms_norm_forward(s, x.data_ptr(), weight.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(),
                            at::cuda::getCurrentCUDAStream());
  return {y, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cuda(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                          const at::Tensor& weight_in, const at::Tensor& rstd,
                                                          int64_t groups, bool need_dw) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), dy = as_contiguous(dy_in, x);
  const auto s = norm_shape(x, x.size(-1), groups, 0.0);
  const WeightGradBuffers dw = weight_grad_buffers(s, weight, need_dw);
  at::Tensor dx = at::empty(x.sizes(), x.options());
  kernels::rms_norm_backward(s, x.data_ptr(), weight.data_ptr(), rstd.data_ptr<float>(), dy.data_ptr(), dx.data_ptr(),
                             dw.out, at::cuda::getCurrentCUDAStream());
  return {dx, dw.dweight};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_forward_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                                         double alpha, const at::Tensor& weight_in,
                                                                         double eps) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), y = y_in.contiguous(), weight = weight_in.contiguous();
  const auto s = norm_shape(x, x.size(-1), 1, eps);
  at::Tensor h = at::empty(x.sizes(), x.options()), out = at::empty(x.sizes(), x.options());
  at::Tensor rstd = at::empty({s.rows}, x.options().dtype(at::kFloat));
  kernels::add_rms_norm_forward(s, x.data_ptr(), y.data_ptr(), static_cast<float>(alpha), weight.data_ptr(),
                                h.data_ptr(), out.data_ptr(), rstd.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  return {h, out, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_backward_cuda(const at::Tensor& dh_in, const at::Tensor& dn_in,
                                                                          const at::Tensor& h_in,
                                                                          const at::Tensor& weight_in,
                                                                          const at::Tensor& rstd, double alpha,
                                                                          bool need_dy, bool need_dw) {
  const c10::cuda::CUDAGuard guard(h_in.device());
  const at::Tensor h = h_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor dh = as_contiguous(dh_in, h), dn = as_contiguous(dn_in, h);
  const auto s = norm_shape(h, h.size(-1), 1, 0.0);
  const WeightGradBuffers dw = weight_grad_buffers(s, weight, need_dw);
  at::Tensor dx = at::empty(h.sizes(), h.options());
  at::Tensor dy = need_dy ? at::empty(h.sizes(), h.options()) : at::Tensor();
  kernels::add_rms_norm_backward(s, h.data_ptr(), weight.data_ptr(), rstd.data_ptr<float>(), dh.data_ptr(),
                                 dn.data_ptr(), static_cast<float>(alpha), dx.data_ptr(),
                                 need_dy ? dy.data_ptr() : nullptr, dw.out, at::cuda::getCurrentCUDAStream());
  return {dx, dy, dw.dweight};
}

at::Tensor rope_cuda(const at::Tensor& x_in, const at::Tensor& positions_in, double theta, bool inverse) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), positions = positions_in.contiguous();
  HYDRA_CHECK(positions.scalar_type() == at::kLong && positions.is_cuda(), "rope: positions must be CUDA int64");
  at::Tensor out = at::empty(x.sizes(), x.options());
  const auto s = rope_shape(x, theta);
  if (inverse) {
    kernels::rope_backward(s, x.data_ptr(), positions.data_ptr<int64_t>(), out.data_ptr(),
                           at::cuda::getCurrentCUDAStream());
  } else {
    kernels::rope_forward(s, x.data_ptr(), positions.data_ptr<int64_t>(), out.data_ptr(),
                          at::cuda::getCurrentCUDAStream());
  }
  return out;
}

kernels::RopeConcatShape rope_concat_shape(const at::Tensor& out, int64_t d_a, int64_t b_heads, double theta) {
  kernels::RopeConcatShape s;
  s.rope.tokens = out.size(0) * out.size(1);
  s.rope.heads = static_cast<int>(out.size(2));
  s.rope.head_dim = static_cast<int>(out.size(3) - d_a);
  s.rope.theta = theta;
  s.rope.dtype = storage_of(out);
  s.copy_dim = static_cast<int>(d_a);
  s.b_heads = static_cast<int>(b_heads);
  return s;
}

at::Tensor rope_concat_forward_cuda(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& positions_in,
                                    double theta) {
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous(), positions = positions_in.contiguous();
  at::Tensor out = at::empty({a.size(0), a.size(1), a.size(2), a.size(3) + b.size(3)}, a.options());
  kernels::rope_concat_forward(rope_concat_shape(out, a.size(3), b.size(2), theta), a.data_ptr(), b.data_ptr(),
                               positions.data_ptr<int64_t>(), out.data_ptr(), at::cuda::getCurrentCUDAStream());
  return out;
}

std::tuple<at::Tensor, at::Tensor> rope_concat_backward_cuda(const at::Tensor& dout_in, int64_t d_a, int64_t b_heads,
                                                             const at::Tensor& positions_in, double theta) {
  const c10::cuda::CUDAGuard guard(dout_in.device());
  const at::Tensor dout = dout_in.contiguous(), positions = positions_in.contiguous();
  const int64_t B = dout.size(0), S = dout.size(1), heads = dout.size(2), D = dout.size(3) - d_a;
  at::Tensor da = at::empty({B, S, heads, d_a}, dout.options());
  at::Tensor db = at::empty({B, S, b_heads, D}, dout.options());
  kernels::rope_concat_backward(rope_concat_shape(dout, d_a, b_heads, theta), dout.data_ptr(),
                                positions.data_ptr<int64_t>(), da.data_ptr(), db.data_ptr(),
                                at::cuda::getCurrentCUDAStream());
  return {da, db};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_rope_forward_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                              const at::Tensor& positions_in, double theta,
                                                              double eps) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), positions = positions_in.contiguous();
  const auto s = rope_shape(x, theta);
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor rstd = at::empty({s.tokens * s.heads}, x.options().dtype(at::kFloat));
  kernels::rms_norm_rope_forward(s, static_cast<float>(eps), x.data_ptr(), weight.data_ptr(),
                                 positions.data_ptr<int64_t>(), out.data_ptr(), rstd.data_ptr<float>(),
                                 at::cuda::getCurrentCUDAStream());
  return {out, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_rope_backward_cuda(const at::Tensor& dout, const at::Tensor& x_in,
                                                               const at::Tensor& weight_in, const at::Tensor& positions,
                                                               const at::Tensor& rstd, double theta, bool need_dw) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  // The gradient of the norm's output, rounded to the storage type as autograd would hold it;
  // then the norm's backward writes dx over it (the launcher allows dx to alias dy).
  at::Tensor g = rope_cuda(as_contiguous(dout, x), positions, theta, /*inverse=*/true);
  const auto s = norm_shape(x, x.size(-1), 1, 0.0);
  const WeightGradBuffers dw = weight_grad_buffers(s, weight, need_dw);
  kernels::rms_norm_backward(s, x.data_ptr(), weight.data_ptr(), rstd.data_ptr<float>(), g.data_ptr(), g.data_ptr(),
                             dw.out, at::cuda::getCurrentCUDAStream());
  return {g, dw.dweight};
}

at::Tensor swiglu_forward_cuda(const at::Tensor& g_in, const at::Tensor& u_in) {
  const c10::cuda::CUDAGuard guard(g_in.device());
  const at::Tensor g = g_in.contiguous(), u = u_in.contiguous();
  at::Tensor out = at::empty(g.sizes(), g.options());
  kernels::swiglu_forward(g.numel(), storage_of(g), g.data_ptr(), u.data_ptr(), out.data_ptr(),
                          at::cuda::getCurrentCUDAStream());
  return out;
}

std::tuple<at::Tensor, at::Tensor> swiglu_backward_cuda(const at::Tensor& g_in, const at::Tensor& u_in,
                                                        const at::Tensor& dout_in) {
  const c10::cuda::CUDAGuard guard(g_in.device());
  const at::Tensor g = g_in.contiguous(), u = u_in.contiguous(), dout = as_contiguous(dout_in, g);
  at::Tensor dg = at::empty(g.sizes(), g.options()), du = at::empty(u.sizes(), u.options());
  kernels::swiglu_backward(g.numel(), storage_of(g), g.data_ptr(), u.data_ptr(), dout.data_ptr(), dg.data_ptr(),
                           du.data_ptr(), at::cuda::getCurrentCUDAStream());
  return {dg, du};
}

}  // namespace hydra::model
