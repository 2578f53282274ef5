// Fused RMSNorm (docs/MODEL.md, "Notation"), its residual-add form and its backward.
// Launchers only: raw device pointers, sizes and an explicit stream; nothing here synchronises
// the stream. model/fused_ops.h wraps them in autograd Functions.
//
// Layout: x is `rows` contiguous rows of n elements; weight is [groups, n] and row r uses
// weight row r % groups (groups = 1: one weight for every row; the per-head norms of
// attention outputs: groups = heads). Every tensor is float32 or bfloat16 (the shape's
// dtype); rstd is float32 [rows]. All arithmetic is float32.
//
// Rounding: the forward rounds as the unfused LibTorch ops do (normalise in float32, round to
// the storage type, then multiply by the weight and round again), so the fused kernels differ
// from them only by the order of the sum of squares: at most one storage rounding per element.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct RmsNormShape {
  int64_t rows = 0;
  int n = 0;       // elements per row, the normalised dimension
  int groups = 1;  // weight rows; divides rows
  float eps = 1e-6f;
  StorageType dtype = StorageType::kBFloat16;
};

// y = x * rstd * weight[r % groups], rstd = 1 / sqrt(mean(x^2) + eps) per row.
void rms_norm_forward(const RmsNormShape& shape, const void* x, const void* weight, void* y, float* rstd,
                      cudaStream_t stream);

// The residual stream and the next norm in one pass: h = x + alpha * y (rounded as x +
// round(alpha * y), the unfused order), out = rms_norm(h). h must not alias x or y.
void add_rms_norm_forward(const RmsNormShape& shape, const void* x, const void* y, float alpha, const void* weight,
                          void* h, void* out, float* rstd, cudaStream_t stream);

// Where a backward also writes the weight gradient: dweight [groups, n] (storage type) = sum over
// rows r of dy * round(x * rstd), weight row r % groups; workspace: rms_norm_weight_grad_workspace
// bytes of device memory, whose contents on entry do not matter. dweight nullptr: not computed.
struct RmsNormWeightGrad {
  void* dweight = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

size_t rms_norm_weight_grad_workspace(const RmsNormShape& shape);

// dx = rstd * (g - xhat * mean(xhat * g)), g = dy * weight[r % groups], xhat = x * rstd, from the
// forward's input x and rstd; and the weight gradient when asked. dx may alias dy.
//
// The weight gradient has no atomics and is bitwise reproducible: float32 partial sums over fixed
// chunks of rows, then one kernel adds the chunks in order. With one weight row (groups 1) and
// rows that allow 16-byte vectors (n a multiple of 8 bf16 / 4 float32 elements, aligned
// pointers, n <= 3072) the partial sums are taken in the same pass as dx, which then reads
// x and dy once; otherwise a separate pass reads them again first. The two order their sums
// differently, so the pointers' alignment, not only the shape, decides the rounding.
void rms_norm_backward(const RmsNormShape& shape, const void* x, const void* weight, const float* rstd, const void* dy,
                       void* dx, const RmsNormWeightGrad& dweight, cudaStream_t stream);

// The backward of add_rms_norm_forward from the gradients dh (of h) and dn (of out):
// dx = dh + rms_norm_backward(dn), dy = alpha * dx (dy nullptr: not written; the form for a
// norm's input that is also used elsewhere, dh then being that use's gradient), and the weight
// gradient (from dn and h) when asked. h and rstd are the forward's outputs.
void add_rms_norm_backward(const RmsNormShape& shape, const void* h, const void* weight, const float* rstd,
                           const void* dh, const void* dn, float alpha, void* dx, void* dy,
                           const RmsNormWeightGrad& dweight, cudaStream_t stream);

}  // namespace hydra::kernels
