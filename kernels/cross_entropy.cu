// The LM head's per-chunk softmax cross entropy (cross_entropy.h).
//
// Design invariants:
// - One block of kThreads per row. The row is read twice (statistics, then gradient) and
//   written once; a row of 50304 bf16 (100 KB) is read again from L2, not from HBM.
// - Statistics in float32, online: each thread keeps a running (max, sum of exp(x - max)) over
//   its elements, rescaling its sum once per loaded vector; the block merges the pairs with warp
//   shuffles, then through shared memory. No float32 copy of the row is ever written.
// - Loads and stores are 16-byte vectors where the row allows: a row of odd length V (50257)
//   starts at any element offset, so each row is split into a scalar head up to its first
//   16-byte boundary, whole vectors, and a scalar tail.
// - Thread 0 reads the target logit before the block's barrier, so before any thread
//   overwrites the row with its gradient.
// - Padding columns (>= vocab_valid) count as -inf: no probability, gradient 0.
#include "kernels/cross_entropy.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "common/errors.h"

namespace hydra::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kIgnore = -100;

using bf16 = __nv_bfloat16;

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ float load1(const float* p) { return *p; }
__device__ __forceinline__ float load1(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store1(float* p, float v) { *p = v; }
__device__ __forceinline__ void store1(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ void load_vec(const float* p, float (&v)[4]) {
  const float4 r = *reinterpret_cast<const float4*>(p);
  v[0] = r.x;
  v[1] = r.y;
  v[2] = r.z;
  v[3] = r.w;
}
__device__ __forceinline__ void load_vec(const bf16* p, float (&v)[8]) {
  const uint4 r = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void store_vec(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store_vec(bf16* p, const float (&v)[8]) {
  uint4 r;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = r;
}

// A row of n elements: [0, head) scalar, then `vectors` aligned vectors, then [tail, n) scalar.
struct RowSplit {
  int64_t head = 0;
  int64_t vectors = 0;
  int64_t tail = 0;
};

template <typename T>
__device__ RowSplit split_row(const T* row, int64_t n) {
  RowSplit s;
  const auto misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % 16);
  s.head = misalign == 0 ? 0 : (16 - misalign) / static_cast<int64_t>(sizeof(T));
  if (s.head > n) s.head = n;
  s.vectors = (n - s.head) / kVec<T>;
  s.tail = s.head + s.vectors * kVec<T>;
  return s;
}

// Running (max, sum of exp(x - max)) of one thread, then of the block.
struct MaxSum {
  float max = -FLT_MAX;  // not -inf: exp(max - new_max) stays 0 or finite, never NaN
  float sum = 0.f;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

// Adds `count` values starting at column `col` (padding columns skipped) to the running pair.
template <int N>
__device__ __forceinline__ void absorb(MaxSum& run, const float (&v)[N], int64_t col, int64_t vocab_valid) {
  float local = -FLT_MAX;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (col + i < vocab_valid) local = fmaxf(local, v[i]);
  }
  const float m = fmaxf(run.max, local);
  float sum = run.sum * __expf(run.max - m);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (col + i < vocab_valid) sum += __expf(v[i] - m);
  }
  run = {m, sum};
}

// (softmax - onehot) * scale over `count` values starting at column `col`, in place.
template <int N>
__device__ __forceinline__ void to_gradient(float (&v)[N], int64_t col, int64_t vocab_valid, int64_t target, float lse,
                                            float scale) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t c = col + i;
    float g = c < vocab_valid ? __expf(v[i] - lse) * scale : 0.f;
    if (c == target) g -= scale;
    v[i] = g;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) cross_entropy_kernel(T* logits, int64_t vocab, int64_t vocab_valid,
                                                                 int64_t row_stride, const int64_t* targets,
                                                                 const float* row_scale, float* loss) {
  constexpr int V = kVec<T>;
  const int64_t r = blockIdx.x;
  T* row = logits + r * row_stride;
  const int tid = threadIdx.x;
  const RowSplit split = split_row(row, vocab);
  const int64_t target = targets[r];
  const bool counted = target != kIgnore;
  const bool in_range = target >= 0 && target < vocab;
  // Read before the barrier below: after it the row is overwritten.
  float target_logit = 0.f;
  if (tid == 0 && counted && in_range) target_logit = target < vocab_valid ? load1(row + target) : -INFINITY;

  MaxSum run;
  for (int64_t c = tid; c < split.head; c += kThreads) {
    const float v[1] = {load1(row + c)};
    absorb(run, v, c, vocab_valid);
  }
  for (int64_t i = tid; i < split.vectors; i += kThreads) {
    const int64_t c = split.head + i * V;
    float v[V];
    load_vec(row + c, v);
    absorb(run, v, c, vocab_valid);
  }
  for (int64_t c = split.tail + tid; c < vocab; c += kThreads) {
    const float v[1] = {load1(row + c)};
    absorb(run, v, c, vocab_valid);
  }
  // Merge over the warp, then over the warps (every thread merges the kWarps partials itself).
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other = {__shfl_xor_sync(0xffffffffu, run.max, offset), __shfl_xor_sync(0xffffffffu, run.sum, offset)};
    run = merge(run, other);
  }
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  if (tid % 32 == 0) {
    warp_max[tid / 32] = run.max;
    warp_sum[tid / 32] = run.sum;
  }
  __syncthreads();
  MaxSum block;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) block = merge(block, {warp_max[w], warp_sum[w]});
  const float lse = block.max + logf(block.sum);
  if (tid == 0) loss[r] = !counted ? 0.f : in_range ? lse - target_logit : NAN;
  if (row_scale == nullptr) return;

  const float scale = row_scale[r];
  for (int64_t c = tid; c < split.head; c += kThreads) {
    float v[1] = {load1(row + c)};
    to_gradient(v, c, vocab_valid, target, lse, scale);
    store1(row + c, v[0]);
  }
  for (int64_t i = tid; i < split.vectors; i += kThreads) {
    const int64_t c = split.head + i * V;
    float v[V];
    load_vec(row + c, v);
    to_gradient(v, c, vocab_valid, target, lse, scale);
    store_vec(row + c, v);
  }
  for (int64_t c = split.tail + tid; c < vocab; c += kThreads) {
    float v[1] = {load1(row + c)};
    to_gradient(v, c, vocab_valid, target, lse, scale);
    store1(row + c, v[0]);
  }
}

void check_launch() {
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) {
    HYDRA_FAIL(common::RuntimeFailure, "cross entropy: launch failed: " << cudaGetErrorString(rc));
  }
}

}  // namespace

void cross_entropy_chunk(const CrossEntropyChunk& c, cudaStream_t stream) {
  HYDRA_CHECK(c.rows >= 0 && c.rows <= INT32_MAX && c.vocab > 0 && c.vocab_valid > 0 && c.vocab_valid <= c.vocab &&
                  c.row_stride >= c.vocab,
              "cross entropy: rows " << c.rows << ", vocab " << c.vocab << ", valid " << c.vocab_valid << ", stride "
                                     << c.row_stride);
  if (c.rows == 0) return;
  HYDRA_CHECK(c.logits != nullptr && c.targets != nullptr && c.loss != nullptr, "cross entropy: null pointer");
  const dim3 grid(static_cast<unsigned>(c.rows));
  if (c.dtype == CrossEntropyDtype::kBFloat16) {
    cross_entropy_kernel<bf16><<<grid, kThreads, 0, stream>>>(static_cast<bf16*>(c.logits), c.vocab, c.vocab_valid,
                                                              c.row_stride, c.targets, c.row_scale, c.loss);
  } else {
    cross_entropy_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<float*>(c.logits), c.vocab, c.vocab_valid,
                                                               c.row_stride, c.targets, c.row_scale, c.loss);
  }
  check_launch();
}

void accumulate_bf16_gemm_tn(cublasHandle_t handle, const void* g, int64_t ldg, const void* h, int64_t ldh,
                             float* acc, int64_t rows, int64_t vocab, int64_t dim) {
  HYDRA_CHECK(rows >= 0 && rows <= INT32_MAX && vocab <= INT32_MAX && dim <= INT32_MAX && ldg >= vocab &&
                  ldh >= dim && ldg <= INT32_MAX && ldh <= INT32_MAX,
              "bf16 gemm: rows " << rows << ", vocab " << vocab << ", dim " << dim);
  if (rows == 0 || vocab == 0 || dim == 0) return;
  const float one = 1.f;
  // Column-major view: acc^T [dim, vocab] += h^T [dim, rows] @ g [rows, vocab], where h^T is
  // h's row-major storage as is and g is g^T's column-major storage, transposed.
  const cublasStatus_t rc =
      cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(dim), static_cast<int>(vocab),
                   static_cast<int>(rows), &one, h, CUDA_R_16BF, static_cast<int>(ldh), g, CUDA_R_16BF,
                   static_cast<int>(ldg), &one, acc, CUDA_R_32F, static_cast<int>(dim), CUBLAS_COMPUTE_32F,
                   CUBLAS_GEMM_DEFAULT);
  if (rc != CUBLAS_STATUS_SUCCESS) {
    HYDRA_FAIL(common::RuntimeFailure, "bf16 gemm (weight gradient): cuBLAS status " << static_cast<int>(rc));
  }
}

}  // namespace hydra::kernels
