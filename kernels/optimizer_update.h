// The optimizer's two passes over the gradient as single kernels: the sum of squares for the
// global gradient norm (fp64 accumulation, as the ATen path's fp64 cast did, without its two
// fp64 temporaries of twice the input's size; over the flat fp32 shard or the bf16 .grad), and the whole AdamW update of
// parallel/adamw.h (decay, both moments, the bias-corrected step, the gate of
// parallel/step_gate.h) in one read and one write of each state element instead of about
// ten passes. Launchers only: raw device pointers, explicit stream, no synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

// One tensor of sum_of_squares: `count` contiguous elements of `type` at `x` (device).
struct SquaresInput {
  const void* x = nullptr;
  int64_t count = 0;
  StorageType type = StorageType::kFloat32;
};

// Bytes of device scratch sum_of_squares needs for these inputs.
size_t sum_of_squares_workspace(const SquaresInput* inputs, int n);

// *out (fp64, device) = sum over the n inputs and their elements of double(x)^2 (bf16 is read
// as it is: the gradient norm over bf16 .grad needs no fp32 copy). One launch per 48 inputs.
// Deterministic: each block adds a fixed set of chunks into its partial sum, then one block adds
// the partials in a fixed order (no atomics).
void sum_of_squares(const SquaresInput* inputs, int n, double* out, void* workspace, size_t workspace_bytes,
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

// One parameter of adamw_tensors_update: `count` contiguous elements of its gradient and of its
// value, both of `type`, whose optimizer state starts at element `offset` of the AdamWFlat arrays.
struct AdamWTensor {
  const void* grad = nullptr;  // null: no gradient this step, read as 0 (as the gather reads it)
  void* value = nullptr;       // receives the updated master weight, rounded to `type`
  int64_t offset = 0;
  int64_t count = 0;
  StorageType type = StorageType::kFloat32;
  bool decays = false;  // the tensor's weight-decay group (AdamWFlat::decay_mask is not read)
};

// adamw_flat_update (state.grad and state.decay_mask unused) with each tensor's gradient read
// where autograd left it and the updated weight written straight into the parameter: with one
// data-parallel rank there is no flat gradient, and this saves the gather into fp32 and the
// scatter back (12 of 41 bytes per bf16 parameter); a whole tensor decays or does not, so its
// flag replaces the mask's byte an element (28 bytes an element remain). Bitwise the same as
// gather, adamw_flat_update, scatter: the casts are exact (bf16 -> fp32) and round to nearest
// even (fp32 -> bf16) as copy_ does.
void adamw_tensors_update(const AdamWFlat& state, const AdamWTensor* tensors, int n, cudaStream_t stream);

}  // namespace hydra::kernels
