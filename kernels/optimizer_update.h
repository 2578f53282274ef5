// The optimizer's two passes over the flat fp32 gradient shard as single kernels: the sum of
// squares for the global gradient norm (fp64 accumulation, as the ATen path's fp64 cast did,
// without its two fp64 temporaries of twice the shard's size), and the whole AdamW update of
// parallel/adamw.h (decay, both moments, the bias-corrected step, the gate of
// parallel/step_gate.h) in one read and one write of each state element instead of about
// ten passes. Launchers only: raw device pointers, explicit stream, no synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace hydra::kernels {

// Bytes of device scratch sum_of_squares needs for `count` elements.
size_t sum_of_squares_workspace(int64_t count);

// *out (fp64, device) = sum over i of double(x[i])^2. Deterministic: fixed per-block partial
// sums, then one block adds them in a fixed order (no atomics).
void sum_of_squares(int64_t count, const float* x, double* out, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream);

// The AdamW update of parallel/adamw.h (adamw_apply) on `count` elements, fp32 state:
//   g = finite ? grad * clip : 0
//   master *= 1 - decay_mask * decay
//   m = m * keep1 + g * one_minus_beta1;  v = v * keep2 + g * g * one_minus_beta2
//   master += (m * neg_step_size) / (sqrt(v) / bias2_sqrt + eps)
// `scalars` (device, fp32): {clip, keep1, keep2, decay, neg_step_size, bias2_sqrt}, worked out
// on the device per step (parallel/adamw.h: AdamWUpdate); `finite` (device bool). On a skipped
// step keep1 = keep2 = 1 and decay = neg_step_size = 0, so every element stays bitwise.
struct AdamWFlat {
  int64_t count = 0;
  const float* grad = nullptr;
  float* master = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  const uint8_t* decay_mask = nullptr;  // 1: decays, 0: does not
  const float* scalars = nullptr;
  const bool* finite = nullptr;
  float one_minus_beta1 = 0;
  float one_minus_beta2 = 0;
  float eps = 0;
};
void adamw_flat_update(const AdamWFlat& args, cudaStream_t stream);

}  // namespace hydra::kernels
