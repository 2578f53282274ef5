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

at::Tensor fused_sum_of_squares(const std::vector<at::Tensor>& xs) {
#ifdef HYDRA_CUDA
  if (xs.empty()) return {};
  std::vector<kernels::SquaresInput> inputs;
  for (const at::Tensor& x : xs) {
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    if (!x.defined() || !x.is_cuda() || !x.is_contiguous() || x.device() != xs.front().device() ||
        !(bf16 || x.scalar_type() == at::kFloat)) {
      return {};
    }
    inputs.push_back({x.data_ptr(), x.numel(), bf16 ? kernels::StorageType::kBFloat16 : kernels::StorageType::kFloat32});
  }
  const c10::cuda::CUDAGuard guard(xs.front().device());
  const at::TensorOptions on = xs.front().options();
  at::Tensor out = at::empty({1}, on.dtype(at::kDouble));
  const int n = static_cast<int>(inputs.size());
  const size_t bytes = kernels::sum_of_squares_workspace(inputs.data(), n);
  at::Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, on.dtype(at::kByte));
  kernels::sum_of_squares(inputs.data(), n, out.data_ptr<double>(), workspace.data_ptr(), bytes,
                          at::cuda::getCurrentCUDAStream());
  return out;
#else
  (void)xs;
  return {};
#endif
}

#ifdef HYDRA_CUDA
namespace {

// Whether the fused AdamW kernels take this state and update; fills the flat arguments.
bool adamw_flat_args(AdamWState& s, const AdamWHyper& h, const AdamWUpdate& u, kernels::AdamWFlat& a) {
  const bool applies = fp32_cuda(s.master) && fp32_cuda(s.exp_avg) && fp32_cuda(s.exp_avg_sq) &&
                       s.decay_mask.is_cuda() && s.decay_mask.scalar_type() == at::kByte &&
                       s.decay_mask.is_contiguous() && fp32_cuda(u.scalars) && u.scalars.numel() == 6 &&
                       u.finite.defined() && u.finite.is_cuda() && u.finite.scalar_type() == at::kBool;
  if (!applies) return false;
  a.count = s.master.numel();
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
  return true;
}

}  // namespace
#endif

bool fused_adamw_update(AdamWState& s, const at::Tensor& grad, const AdamWHyper& h, const AdamWUpdate& u) {
#ifdef HYDRA_CUDA
  kernels::AdamWFlat a;
  if (!fp32_cuda(grad) || !adamw_flat_args(s, h, u, a)) return false;
  const c10::cuda::CUDAGuard guard(grad.device());
  a.grad = grad.data_ptr<float>();
  kernels::adamw_flat_update(a, at::cuda::getCurrentCUDAStream());
  return true;
#else
  (void)s, (void)grad, (void)h, (void)u;
  return false;
#endif
}

bool fused_adamw_params(AdamWState& s, const FlatLayout& layout, const NamedParams& params, const AdamWHyper& h,
                        const AdamWUpdate& u) {
#ifdef HYDRA_CUDA
  kernels::AdamWFlat a;
  if (!adamw_flat_args(s, h, u, a)) return false;
  std::vector<kernels::AdamWTensor> tensors;
  for (const SlotPiece& piece : pieces_in(layout, s.range)) {
    const at::Tensor& p = params[piece.slot].second;
    const at::Tensor& g = p.grad();
    const bool bf16 = p.scalar_type() == at::kBFloat16;
    const auto usable = [&](const at::Tensor& t) {
      return t.is_cuda() && t.device() == s.master.device() && t.is_contiguous() && t.scalar_type() == p.scalar_type();
    };
    if (!(bf16 || p.scalar_type() == at::kFloat) || !usable(p) || (g.defined() && !usable(g))) return false;
    const size_t elem = p.element_size();
    kernels::AdamWTensor t;
    t.value = static_cast<char*>(p.data_ptr()) + piece.elements.begin * elem;
    t.grad = g.defined() ? static_cast<const char*>(g.data_ptr()) + piece.elements.begin * elem : nullptr;
    t.offset = layout.slots[piece.slot].offset + piece.elements.begin - s.range.begin;
    t.count = piece.elements.size();
    t.type = bf16 ? kernels::StorageType::kBFloat16 : kernels::StorageType::kFloat32;
    t.decays = layout.slots[piece.slot].decay;  // the slot's group, as make_adamw_state's mask holds it
    tensors.push_back(t);
  }
  const c10::cuda::CUDAGuard guard(s.master.device());
  kernels::adamw_tensors_update(a, tensors.data(), static_cast<int>(tensors.size()), at::cuda::getCurrentCUDAStream());
  return true;
#else
  (void)s, (void)layout, (void)params, (void)h, (void)u;
  return false;
#endif
}

}  // namespace hydra::parallel
