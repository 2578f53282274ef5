// Autograd-free glue between LibTorch tensors and the cross entropy launchers.
#include "model/cross_entropy_fused.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/errors.h"
#include "kernels/cross_entropy.h"

namespace hydra::model {

bool fused_cross_entropy_applies(const at::Tensor& logits) {
  return logits.is_cuda() && logits.dim() == 2 && logits.stride(1) == 1 &&
         (logits.scalar_type() == at::kBFloat16 || logits.scalar_type() == at::kFloat);
}

void cross_entropy_chunk_fused(at::Tensor& logits, const at::Tensor& targets, int64_t vocab_valid,
                               const at::Tensor& row_scale, at::Tensor& loss_rows) {
  HYDRA_CHECK(fused_cross_entropy_applies(logits), "fused cross entropy: logits " << logits.sizes());
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor t = targets.contiguous();
  const at::Tensor scale = row_scale.defined() ? row_scale.to(at::kFloat).contiguous() : at::Tensor();
  // The kernel writes float32 losses; the caller's rows may be a view of another dtype.
  const bool direct = loss_rows.scalar_type() == at::kFloat && loss_rows.is_contiguous();
  at::Tensor loss = direct ? loss_rows : at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  kernels::CrossEntropyChunk c;
  c.logits = logits.data_ptr();
  c.rows = logits.size(0);
  c.vocab = logits.size(1);
  c.vocab_valid = vocab_valid;
  c.row_stride = logits.stride(0);
  c.targets = t.data_ptr<int64_t>();
  c.row_scale = scale.defined() ? scale.data_ptr<float>() : nullptr;
  c.loss = loss.data_ptr<float>();
  c.dtype = logits.scalar_type() == at::kBFloat16 ? kernels::CrossEntropyDtype::kBFloat16
                                                  : kernels::CrossEntropyDtype::kFloat32;
  kernels::cross_entropy_chunk(c, at::cuda::getCurrentCUDAStream());
  if (!direct) loss_rows.copy_(loss);
}

bool fused_weight_grad_applies(const at::Tensor& acc, const at::Tensor& g, const at::Tensor& h_c) {
  return acc.is_cuda() && acc.scalar_type() == at::kFloat && acc.is_contiguous() && g.is_cuda() &&
         g.scalar_type() == at::kBFloat16 && g.stride(1) == 1 && h_c.is_cuda() &&
         h_c.scalar_type() == at::kBFloat16 && h_c.stride(1) == 1;
}

void accumulate_weight_grad_fused(at::Tensor& acc, const at::Tensor& g, const at::Tensor& h_c) {
  HYDRA_CHECK(fused_weight_grad_applies(acc, g, h_c) && g.size(0) == h_c.size(0) && acc.size(0) == g.size(1) &&
                  acc.size(1) == h_c.size(1),
              "fused weight gradient: acc " << acc.sizes() << ", g " << g.sizes() << ", h " << h_c.sizes());
  const c10::cuda::CUDAGuard guard(acc.device());
  // The handle comes bound to the current stream (and ATen's cuBLAS workspace).
  kernels::accumulate_bf16_gemm_tn(at::cuda::getCurrentCUDABlasHandle(), g.data_ptr(), g.stride(0), h_c.data_ptr(),
                                   h_c.stride(0), acc.data_ptr<float>(), g.size(0), g.size(1), h_c.size(1));
}

}  // namespace hydra::model
