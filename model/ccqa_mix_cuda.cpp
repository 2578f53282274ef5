// ccqa_mix_cuda (ccqa_mix_cuda.h): an autograd Function over kernels/ccqa_mix.h.
#include "model/ccqa_mix_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/ccqa_mix.h"
#include "model/fused_ops_cuda.h"

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::CcqaMixShape shape_of(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& weight,
                               const CcqaMixOptions& o) {
  kernels::CcqaMixShape s;
  s.batch = q0.size(0);
  s.seq = q0.size(1);
  s.head_dim = static_cast<int>(o.head_dim);
  s.heads = static_cast<int>(q0.size(2) / o.head_dim);
  s.kv_heads = static_cast<int>(k0.size(2) / o.head_dim);
  s.qk_gain = static_cast<float>(o.qk_gain);
  s.eps = static_cast<float>(o.eps);
  s.rope_theta = o.theta;
  s.dtype = storage_of(q0);
  s.param_dtype = storage_of(weight);
  return s;
}

kernels::CcqaMixInputs inputs_of(const variable_list& t) {
  kernels::CcqaMixInputs in;
  in.q0 = t[0].data_ptr();
  in.q0_stride = t[0].stride(1);
  in.k0 = t[1].data_ptr();
  in.k0_stride = t[1].stride(1);
  in.qc = t[2].data_ptr();
  in.qc_stride = t[2].stride(1);
  in.kc = t[3].data_ptr();
  in.kc_stride = t[3].stride(1);
  in.positions = t[4].data_ptr<int64_t>();
  in.q_norm_w = t[5].data_ptr();
  in.k_norm_w = t[6].data_ptr();
  in.tau = t[7].data_ptr();
  return in;
}

void save_options(AutogradContext* ctx, const CcqaMixOptions& o) {
  ctx->saved_data["head_dim"] = o.head_dim;
  ctx->saved_data["qk_gain"] = o.qk_gain;
  ctx->saved_data["eps"] = o.eps;
  ctx->saved_data["theta"] = o.theta;
}
CcqaMixOptions load_options(AutogradContext* ctx) {
  CcqaMixOptions o;
  o.head_dim = ctx->saved_data["head_dim"].toInt();
  o.qk_gain = ctx->saved_data["qk_gain"].toDouble();
  o.eps = ctx->saved_data["eps"].toDouble();
  o.theta = ctx->saved_data["theta"].toDouble();
  return o;
}

// Nothing but the inputs is saved: the backward recomputes the forward per token.
class CcqaMixFunction : public torch::autograd::Function<CcqaMixFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& qc,
                               const at::Tensor& kc, const at::Tensor& positions, const at::Tensor& q_norm_w,
                               const at::Tensor& k_norm_w, const at::Tensor& tau, const CcqaMixOptions& o) {
    const c10::cuda::CUDAGuard guard(q0.device());
    const variable_list t = {with_even_rows(q0),      with_even_rows(k0),        with_even_rows(qc),
                             with_even_rows(kc),      positions,                 q_norm_w.contiguous(),
                             k_norm_w.contiguous(),   tau.contiguous()};
    const kernels::CcqaMixShape s = shape_of(q0, k0, q_norm_w, o);
    at::Tensor q = at::empty({s.batch, s.seq, s.heads, s.head_dim}, q0.options());
    at::Tensor k = at::empty({s.batch, s.seq, s.kv_heads, s.head_dim}, q0.options());
    kernels::ccqa_mix_forward(s, inputs_of(t), q.data_ptr(), k.data_ptr(), at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward(t);
    save_options(ctx, o);
    return {q, k};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list t = ctx->get_saved_variables();
    const CcqaMixOptions o = load_options(ctx);
    const at::Tensor &q0 = t[0], &k0 = t[1];
    const c10::cuda::CUDAGuard guard(q0.device());
    const kernels::CcqaMixShape s = shape_of(q0, k0, t[5], o);
    const at::Tensor dq = incoming_gradient(grads[0], {s.batch, s.seq, s.heads, s.head_dim}, q0);
    const at::Tensor dk = incoming_gradient(grads[1], {s.batch, s.seq, s.kv_heads, s.head_dim}, q0);
    const auto rows = [&](int64_t heads) { return at::empty({s.batch, s.seq, heads * s.head_dim}, q0.options()); };
    at::Tensor dq0 = rows(s.heads), dk0 = rows(s.kv_heads), dqc = rows(s.heads), dkc = rows(s.kv_heads);
    at::Tensor dqn = at::empty_like(t[5]), dkn = at::empty_like(t[6]), dtau = at::empty_like(t[7]);
    kernels::CcqaMixGrads g;
    g.dq0 = dq0.data_ptr();
    g.dk0 = dk0.data_ptr();
    g.dqc = dqc.data_ptr();
    g.dkc = dkc.data_ptr();
    g.q_norm_w = dqn.data_ptr();
    g.k_norm_w = dkn.data_ptr();
    g.tau = dtau.data_ptr();
    const size_t bytes = kernels::ccqa_mix_backward_workspace(s);
    at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, q0.options().dtype(at::kByte));
    kernels::ccqa_mix_backward(s, inputs_of(t), dq.data_ptr(), dk.data_ptr(), g, ws.data_ptr(), bytes,
                               at::cuda::getCurrentCUDAStream());
    return {dq0, dk0, dqc, dkc, at::Tensor(), dqn, dkn, dtau, at::Tensor()};
  }
};

}  // namespace

std::optional<std::vector<at::Tensor>> ccqa_mix_cuda(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& qc,
                                                     const at::Tensor& kc, const at::Tensor& positions,
                                                     const at::Tensor& q_norm_w, const at::Tensor& k_norm_w,
                                                     const at::Tensor& tau, const CcqaMixOptions& o) {
  if (!fused_kernels_apply({q0, k0, qc, kc}) || !fused_kernels_apply({q_norm_w, k_norm_w, tau}) ||
      q_norm_w.device() != q0.device() || o.head_dim <= 0 || q0.dim() != 3 || k0.dim() != 3 ||
      qc.sizes() != q0.sizes() || kc.sizes() != k0.sizes() || q0.size(0) != k0.size(0) || q0.size(1) != k0.size(1) ||
      q0.size(2) % o.head_dim != 0 || k0.size(2) % o.head_dim != 0 || q0.numel() == 0 || k0.numel() == 0 ||
      q_norm_w.numel() != o.head_dim || k_norm_w.numel() != o.head_dim || tau.numel() != k0.size(2) / o.head_dim) {
    return std::nullopt;
  }
  if (!kernels::ccqa_mix_supported(shape_of(q0, k0, q_norm_w, o))) return std::nullopt;
  const at::Tensor pos = positions.to(q0.device(), at::kLong).expand({q0.size(0), q0.size(1)}).contiguous();
  const variable_list qk = CcqaMixFunction::apply(q0, k0, qc, kc, pos, q_norm_w, k_norm_w, tau, o);
  return std::vector<at::Tensor>{qk[0], qk[1]};
}

}  // namespace hydra::model
