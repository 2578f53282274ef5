// CCQA steps 4-7 (docs/MODEL.md) after the convolutions, for head sizes the fused prologue
// (ccqa_prologue.h) does not take: from the latents before (q0, k0) and after (qc, kc) the
// convolutions to attention-ready q and k: the qk-mean, the post-mix RMSNorm, the key
// temperature and RoPE, forward and backward, one kernel each way (plus a deterministic
// reduction of the three small parameters' gradients) where the ATen ops take about twenty.
// Launchers only: raw device pointers, sizes, row strides and an explicit stream.
//
// Per token and KV group j (query heads h = j G .. j G + G - 1, G = H / H_kv):
//   m_h  = (q0_h + k0_j) / 2,   pre_h = qc_h + gamma m_h
//   pre_k = kc_j + gamma (k0_j + mean_h q0_h) / 2            (the mean of m over the group)
//   q_h  = rope(rms(pre_h) * q_norm_w),   k_j = rope(rms(pre_k) * k_norm_w * exp(tau_j))
// with rms(x) = x / sqrt(mean(x^2) + eps) over d_h and RoPE rotating the pairs (f, f + d_h/2)
// by position * theta^(-2f/d_h) (angles in float64, the rest float32).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct CcqaMixShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int heads = 0;     // H (local)
  int kv_heads = 0;  // H_kv, divides H
  int head_dim = 0;  // d_h: 64 or 128
  float qk_gain = 0.f;  // gamma; 0 turns the qk-mean off
  float eps = 1e-6f;
  double rope_theta = 10000.0;
  StorageType dtype = StorageType::kBFloat16;        // q0, k0, qc, kc, q, k and their gradients
  StorageType param_dtype = StorageType::kFloat32;   // q_norm_w, k_norm_w [d_h], tau [H_kv]
};

// Row (b S + t) of each input at pointer + (b S + t) * row_stride; heads side by side in a row.
struct CcqaMixInputs {
  const void* q0 = nullptr;
  int64_t q0_stride = 0;
  const void* k0 = nullptr;
  int64_t k0_stride = 0;
  const void* qc = nullptr;
  int64_t qc_stride = 0;
  const void* kc = nullptr;
  int64_t kc_stride = 0;
  const int64_t* positions = nullptr;  // [B, S]
  const void* q_norm_w = nullptr;
  const void* k_norm_w = nullptr;
  const void* tau = nullptr;
};

bool ccqa_mix_supported(const CcqaMixShape& shape);

// q [B, S, H, d_h], k [B, S, H_kv, d_h], contiguous.
void ccqa_mix_forward(const CcqaMixShape& shape, const CcqaMixInputs& in, void* q, void* k, cudaStream_t stream);

// Float32 workspace of the backward (per-block partial sums of the parameters' gradients).
size_t ccqa_mix_backward_workspace(const CcqaMixShape& shape);

// From dq, dk (contiguous, the forward's output layouts): the gradients of q0, k0, qc, kc
// (contiguous [B, S, channels]) and of the parameters (overwritten; summed in a fixed order).
// dq0 and dk0 are the qk-mean's share only (the convolutions' share comes from their own op).
struct CcqaMixGrads {
  void* dq0 = nullptr;
  void* dk0 = nullptr;
  void* dqc = nullptr;
  void* dkc = nullptr;
  void* q_norm_w = nullptr;
  void* k_norm_w = nullptr;
  void* tau = nullptr;
};
void ccqa_mix_backward(const CcqaMixShape& shape, const CcqaMixInputs& in, const void* dq, const void* dk,
                       const CcqaMixGrads& grads, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace hydra::kernels
