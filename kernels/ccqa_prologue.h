// The fused CCQA prologue (docs/MODEL.md, CCQA steps 2-7): from the down-projections q0, k0 and the
// value projection v to attention-ready q, k, v, forward and backward. Launchers only: raw
// device pointers, sizes and an explicit stream; nothing here synchronises the stream.
//
// Layouts (all contiguous, the model's own):
//   q0 [B, S, H*d_h], k0 [B, S, H_kv*d_h], v [B, S, H_kv*d_h]   (float32 or bfloat16)
//   q  [B, S, H, d_h], k [B, S, H_kv, d_h], v_out [B, S, H_kv, d_h] (same type as the inputs)
//   positions [B, S] int64 (RoPE positions; causality goes by index)
//   parameters float32 in the torch layouts of CausalConvImpl / RMSNormImpl / tau.
// H and H_kv are this rank's heads; query head h belongs to KV head h / (H / H_kv).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace hydra::kernels {

enum class CcqaDtype { kFloat32, kBFloat16 };

struct CcqaPrologueShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int heads = 0;        // H (local)
  int kv_heads = 0;     // H_kv (local), divides H
  int head_dim = 0;     // d_h: 16 or 32 (larger heads: model/causal_conv_products.h, kernels/ccqa_mix.h)
  int conv_kernel = 1;  // K: 1, 2 or 3 (ignored without convolutions)
  bool use_convs = true;
  float qk_gain = 0.f;  // gamma of the qk-mean; 0 turns the qk-mean off
  float eps = 1e-6f;    // post-mix RMSNorm epsilon
  double rope_theta = 10000.0;
  CcqaDtype dtype = CcqaDtype::kBFloat16;
  // Tokens a backward block takes at a time, 16..64; 0: the launcher's choice (the fewest
  // rounds of its persistent grid, ccqa_prologue_backward_tile). Tests and timings set it.
  int backward_tile = 0;
};

// Parameters (device, float32). The conv pointers may be null when use_convs is false.
struct CcqaPrologueParams {
  const float* conv1_q_w = nullptr;  // [H d_h, 1, K]
  const float* conv1_q_b = nullptr;  // [H d_h]
  const float* conv1_k_w = nullptr;  // [H_kv d_h, 1, K]
  const float* conv1_k_b = nullptr;  // [H_kv d_h]
  const float* conv2_q_w = nullptr;  // [H d_h, d_h, K]
  const float* conv2_q_b = nullptr;  // [H d_h]
  const float* conv2_k_w = nullptr;  // [H_kv d_h, d_h, K]
  const float* conv2_k_b = nullptr;  // [H_kv d_h]
  const float* q_norm_w = nullptr;   // [d_h]
  const float* k_norm_w = nullptr;   // [d_h]
  const float* tau = nullptr;        // [H_kv]
};

// Their gradients (device, float32, same shapes); every pointer is overwritten, conv ones
// only with use_convs.
struct CcqaPrologueParamGrads {
  float* conv1_q_w = nullptr;
  float* conv1_q_b = nullptr;
  float* conv1_k_w = nullptr;
  float* conv1_k_b = nullptr;
  float* conv2_q_w = nullptr;
  float* conv2_q_b = nullptr;
  float* conv2_k_w = nullptr;
  float* conv2_k_b = nullptr;
  float* q_norm_w = nullptr;
  float* k_norm_w = nullptr;
  float* tau = nullptr;
};

// True when these kernels handle the shape (head size, kernel, grouping, shared memory of the
// current device); otherwise the caller keeps the reference path.
bool ccqa_prologue_supports(const CcqaPrologueShape& shape);

// Steps 3-7 for q and k: convolutions, qk-mean, post-mix norm, key temperature, RoPE.
void ccqa_prologue_forward(const CcqaPrologueShape& shape, const void* q0, const void* k0, const int64_t* positions,
                           const CcqaPrologueParams& params, void* q, void* k, cudaStream_t stream);

// Step 2, the value shift, is not here: the latent attention applies it as it reads the values
// (LatentAttentionShape::value_shift, kernels/latent_attention.h).

// The backward's token tile for this shape on the current device (backward_tile, or the
// launcher's choice where that is 0).
int ccqa_prologue_backward_tile(const CcqaPrologueShape& shape);

// Bytes of device workspace ccqa_prologue_backward needs (per-block parameter-gradient
// partials); its contents on entry do not matter. Depends on the shape and the current device.
size_t ccqa_prologue_backward_workspace(const CcqaPrologueShape& shape);

// Gradients of q0 and k0 (input type) and of every parameter (float32, overwritten) from the
// gradients dq, dk of the forward's outputs q, k. Recomputes the forward from q0, k0. The
// parameter gradients are reduced in a fixed order: the result is bitwise reproducible.
void ccqa_prologue_backward(const CcqaPrologueShape& shape, const void* q0, const void* k0, const int64_t* positions,
                            const CcqaPrologueParams& params, const void* dq, const void* dk, void* dq0, void* dk0,
                            const CcqaPrologueParamGrads& grads, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

}  // namespace hydra::kernels
