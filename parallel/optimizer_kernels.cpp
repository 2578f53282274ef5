#include "parallel/optimizer_kernels.h"

#include <ATen/ATen.h>

#ifdef HYDRA_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/optimizer_update.h"
#endif

namespace hydra::parallel {
namespace {

[[maybe_unused]] bool fp32_cuda(const at::Tensor& t) {
  return t.defined() && t.is_cuda() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

}  // namespace

at::Tensor fused_sum_of_squares(const at::Tensor& x) {
#ifdef HYDRA_CUDA
  if (!fp32_cuda(x)) return {};
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({1}, x.options().dtype(at::kDouble));
  const size_t bytes = kernels::sum_of_squares_workspace(x.numel());
  at::Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
  kernels::sum_of_squares(x.numel(), x.data_ptr<float>(), out.data_ptr<double>(), workspace.data_ptr(), bytes,
                          at::cuda::getCurrentCUDAStream());
  return out;
#else
  (void)x;
  return {};
#endif
}

bool fused_adamw_update(AdamWState& s, const at::Tensor& grad, const AdamWHyper& h, const AdamWUpdate& u) {
#ifdef HYDRA_CUDA
  const bool applies = fp32_cuda(grad) && fp32_cuda(s.master) && fp32_cuda(s.exp_avg) && fp32_cuda(s.exp_avg_sq) &&
                       s.decay_mask.is_cuda() && s.decay_mask.scalar_type() == at::kByte &&
                       s.decay_mask.is_contiguous() && fp32_cuda(u.scalars) && u.scalars.numel() == 6 &&
                       u.finite.defined() && u.finite.is_cuda() && u.finite.scalar_type() == at::kBool;
  if (!applies) return false;
  const c10::cuda::CUDAGuard guard(grad.device());
  kernels::AdamWFlat a;
  a.count = s.master.numel();
  a.grad = grad.data_ptr<float>();
  a.master = s.master.data_ptr<float>();
  a.exp_avg = s.exp_avg.data_ptr<float>();
  a.exp_avg_sq = s.exp_avg_sq.data_ptr<float>();
  a.decay_mask = s.decay_mask.data_ptr<uint8_t>();
  a.scalars = u.scalars.data_ptr<float>();
  a.finite = u.finite.data_ptr<bool>();
  // The constants the ATen passes multiply by, rounded to fp32 as those passes round them.
  a.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  a.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  a.eps = static_cast<float>(h.eps);
  kernels::adamw_flat_update(a, at::cuda::getCurrentCUDAStream());
  return true;
#else
  (void)s, (void)grad, (void)h, (void)u;
  return false;
#endif
}

}  // namespace hydra::parallel
