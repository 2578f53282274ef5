// CCQA steps 4-7 after the convolutions (qk-mean, post-mix norm, key temperature, RoPE) as one
// differentiable op on kernels/ccqa_mix.h (CUDA build only): the fused form of
// CcqaAttention::mix_and_rotate where the fused prologue does not take the head size (64 and
// 128 here; the `heads` layout's). Its reference is mix_and_rotate's ATen path, in tests.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace hydra::model {

struct CcqaMixOptions {
  int64_t head_dim = 0;
  double qk_gain = 0.0;  // gamma; 0 = no qk-mean
  double eps = 1e-6;
  double theta = 10000.0;
};

// q0, qc [B, S, H d_h] and k0, kc [B, S, H_kv d_h] of one dtype (bf16 or float32; column blocks
// of wider tensors are fine), positions [S] or [B, S], q_norm_w, k_norm_w [d_h] and tau [H_kv]
// of one dtype. Returns {q [B, S, H, d_h], k [B, S, H_kv, d_h]}, differentiable in every input
// but positions; nullopt when the kernels do not take these tensors.
std::optional<std::vector<at::Tensor>> ccqa_mix_cuda(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& qc,
                                                     const at::Tensor& kc, const at::Tensor& positions,
                                                     const at::Tensor& q_norm_w, const at::Tensor& k_norm_w,
                                                     const at::Tensor& tau, const CcqaMixOptions& options);

}  // namespace hydra::model
