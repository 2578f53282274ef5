// The fused CCQA prologue (kernels/ccqa_prologue.h) as differentiable LibTorch functions: steps
// 3-7 of docs/MODEL.md's CCQA from q0 and k0 to attention-ready q and k. CUDA build only; the
// reference ops in attention_ccqa.cpp stay the CPU path and the oracle. Step 2's value shift is
// not here: the fused attention applies it as it reads v (causal_attention_fused's value_shift).
//
// Precision: q0, k0 and v run in q0's dtype (float32 or bfloat16; k0 and v are cast to it),
// the parameters in float32 (bf16 ones packed into one float32 buffer inside the autograd
// Function, their gradients rounded back to bf16 in one launch); all arithmetic is float32.
// The outputs have q0's dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace hydra::model {

struct CcqaPrologueOptions {
  int64_t head_dim = 0;     // d_h
  int64_t conv_kernel = 1;  // K
  bool use_convs = true;
  double qk_gain = 0.0;     // gamma; 0 = no qk-mean
  double eps = 1e-6;
  double theta = 10000.0;
  // The host-side glue as before the fixed-cost work (CcqaImpl::kFusedBaseline, docs/PERF.md):
  // each parameter cast to float32 outside the autograd Function, one cast and one node each.
  bool baseline_glue = false;
};

// Parameters as CcqaAttention holds them; the conv ones are undefined without use_convs.
struct CcqaPrologueWeights {
  at::Tensor conv1_q_w, conv1_q_b, conv1_k_w, conv1_k_b;
  at::Tensor conv2_q_w, conv2_q_b, conv2_k_w, conv2_k_b;
  at::Tensor q_norm_w, k_norm_w, tau;
};

// True when the kernels handle q0 [B, S, H d_h], k0 [B, S, H_kv d_h] with these options
// (CUDA tensors, float32 or bfloat16, supported d_h / K / grouping).
bool ccqa_prologue_fused_applies(const at::Tensor& q0, const at::Tensor& k0, const CcqaPrologueOptions& options);

// {q [B, S, H, d_h], k [B, S, H_kv, d_h], v [B, S, H_kv, d_h]}: v is the input viewed per head
// (in q0's dtype), not shifted; positions [B, S] (or broadcastable to it) int64.
std::vector<at::Tensor> ccqa_prologue_fused(const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v,
                                            const at::Tensor& positions, const CcqaPrologueWeights& weights,
                                            const CcqaPrologueOptions& options);

}  // namespace hydra::model
