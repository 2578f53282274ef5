// Autograd glue between LibTorch tensors and the latent flash attention launchers.
#include "model/attention_fused.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/errors.h"
#include "kernels/latent_attention.h"
#include "model/attention_core.h"

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::LatentAttentionShape shape_of(const at::Tensor& q, const at::Tensor& k) {
  kernels::LatentAttentionShape s;
  s.batch = static_cast<int>(q.size(0));
  s.seq = static_cast<int>(q.size(1));
  s.heads = static_cast<int>(q.size(2));
  s.kv_heads = static_cast<int>(k.size(2));
  s.head_dim = static_cast<int>(q.size(3));
  return s;
}

// x as the kernels read it (kernels/latent_attention.h's layout rule, D contiguous). Contiguous
// tensors and column blocks of wider ones qualify without a copy; anything else is made contiguous.
at::Tensor kernel_layout(const at::Tensor& x) {
  const bool ok = x.stride(3) == 1 && kernels::latent_attention_strides_ok(x.stride(0), x.stride(1), x.stride(2)) &&
                  kernels::latent_attention_aligned(x.data_ptr());
  return ok ? x : x.contiguous();
}

// The tensors below are bf16 [B, S, heads, D] in kernel_layout.
kernels::BshdConst view(const at::Tensor& x) {
  return {reinterpret_cast<const __nv_bfloat16*>(x.data_ptr<at::BFloat16>()), x.stride(0), x.stride(1), x.stride(2)};
}
kernels::BshdMut mut_view(at::Tensor& x) {
  return {reinterpret_cast<__nv_bfloat16*>(x.data_ptr<at::BFloat16>()), x.stride(0), x.stride(1), x.stride(2)};
}

class LatentAttentionFunction : public torch::autograd::Function<LatentAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                            const at::Tensor& v_in, double scale, bool value_shift) {
    const c10::cuda::CUDAGuard guard(q_in.device());
    const at::Tensor q = kernel_layout(q_in), k = kernel_layout(k_in), v = kernel_layout(v_in);
    auto shape = shape_of(q, k);
    shape.value_shift = value_shift;
    at::Tensor out = at::empty(q.sizes(), q.options());
    at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
    kernels::latent_attention_forward(shape, static_cast<float>(scale), view(q), view(k), view(v), mut_view(out),
                                      lse.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["scale"] = scale;  // a double, not a tensor
    ctx->saved_data["value_shift"] = value_shift;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const c10::cuda::CUDAGuard guard(q.device());
    const at::Tensor dout = grads[0].to(at::kBFloat16).contiguous();
    auto shape = shape_of(q, k);
    shape.value_shift = ctx->saved_data["value_shift"].toBool();
    // Gradients contiguous whatever the inputs' strides.
    at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
               dv = at::empty(v.sizes(), v.options());
    at::Tensor workspace = at::empty({static_cast<int64_t>(kernels::latent_attention_backward_workspace(shape))},
                                     q.options().dtype(at::kByte));
    kernels::latent_attention_backward(shape, static_cast<float>(ctx->saved_data["scale"].toDouble()), view(q), view(k),
                                       view(v), view(out), view(dout), lse.data_ptr<float>(), mut_view(dq),
                                       mut_view(dk), mut_view(dv), workspace.data_ptr(), workspace.numel(),
                                       at::cuda::getCurrentCUDAStream());
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

bool autocast_bf16() {
  return at::autocast::is_autocast_enabled(at::kCUDA) && at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
}

}  // namespace

bool fused_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!q.is_cuda() || !k.is_cuda() || !v.is_cuda() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  if (q.size(3) != k.size(3) || q.size(3) != v.size(3) || !kernels::latent_attention_supports(static_cast<int>(q.size(3)))) {
    return false;
  }
  const bool all_bf16 = q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
                        v.scalar_type() == at::kBFloat16;
  return all_bf16 || autocast_bf16();
}

at::Tensor causal_attention_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                  bool value_shift) {
  if (!fused_attention_applies(q, k, v)) return causal_attention(q, k, value_shift ? shift_values(v) : v, scale);
  HYDRA_CHECK(q.size(2) % k.size(2) == 0 && k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(1) == k.size(1),
              "fused attention: q " << q.sizes() << ", k " << k.sizes() << ", v " << v.sizes());
  // A zero-length sequence or batch has nothing to compute.
  if (q.numel() == 0) return at::empty_like(q, q.options().dtype(at::kBFloat16));
  return LatentAttentionFunction::apply(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), scale,
                                        value_shift);
}

}  // namespace hydra::model
