#include "kernels/optimizer_update.h"

#include <algorithm>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // partial sums; enough blocks to fill an H200 several times

int blocks_for(int64_t count, int per_thread) {
  const int64_t needed = (count + int64_t{kThreads} * per_thread - 1) / (int64_t{kThreads} * per_thread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, kMaxBlocks)));
}

// The block's sum of `v` in thread 0 (fixed order: a tree over warps, then over the warps' sums).
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

__global__ void sum_of_squares_partials(int64_t count, const float* __restrict__ x, double* __restrict__ partials) {
  double acc = 0.0;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t vec_count = aligned ? count / 4 : 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < vec_count; i += stride) {
    const float4 q = reinterpret_cast<const float4*>(x)[i];
    acc += double(q.x) * q.x + double(q.y) * q.y + double(q.z) * q.z + double(q.w) * q.w;
  }
  for (int64_t i = vec_count * 4 + int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += stride) {
    acc += double(x[i]) * x[i];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_partials(int n, const double* __restrict__ partials, double* __restrict__ out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

struct AdamWScalars {
  float clip, keep1, keep2, decay, neg_step_size, bias2_sqrt;
  bool finite;
};

__device__ __forceinline__ AdamWScalars read_scalars(const float* s, const bool* finite) {
  return {s[0], s[1], s[2], s[3], s[4], s[5], *finite};
}

// One element, in the order and roundings of adamw_apply's ATen passes (each pass rounds to
// fp32; __f*_rn keeps the compiler from contracting them into fused multiply-adds).
__device__ __forceinline__ void adamw_element(const AdamWScalars& s, float one_minus_b1, float one_minus_b2, float eps,
                                              float grad, uint8_t decay_mask, float& master, float& m, float& v) {
  const float g = s.finite ? __fmul_rn(grad, s.clip) : 0.0f;
  // (mask 0 or 1: the product is 0 or decay exactly, as the ATen pass's)
  master = __fmul_rn(master, __fsub_rn(1.0f, decay_mask ? s.decay : 0.0f));
  m = __fadd_rn(__fmul_rn(m, s.keep1), __fmul_rn(g, one_minus_b1));
  v = __fadd_rn(__fmul_rn(v, s.keep2), __fmul_rn(__fmul_rn(g, g), one_minus_b2));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias2_sqrt), eps);
  master = __fadd_rn(master, __fdiv_rn(__fmul_rn(m, s.neg_step_size), denom));
}

__global__ void adamw_flat_kernel(AdamWFlat a) {
  const AdamWScalars s = read_scalars(a.scalars, a.finite);
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const bool aligned = (reinterpret_cast<uintptr_t>(a.grad) | reinterpret_cast<uintptr_t>(a.master) |
                        reinterpret_cast<uintptr_t>(a.exp_avg) | reinterpret_cast<uintptr_t>(a.exp_avg_sq)) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(a.decay_mask) % 4 == 0;
  const int64_t vec_count = aligned ? a.count / 4 : 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < vec_count; i += stride) {
    const float4 g = reinterpret_cast<const float4*>(a.grad)[i];
    const uchar4 d = reinterpret_cast<const uchar4*>(a.decay_mask)[i];
    float4 p = reinterpret_cast<float4*>(a.master)[i];
    float4 m = reinterpret_cast<float4*>(a.exp_avg)[i];
    float4 v = reinterpret_cast<float4*>(a.exp_avg_sq)[i];
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g.x, d.x, p.x, m.x, v.x);
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g.y, d.y, p.y, m.y, v.y);
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g.z, d.z, p.z, m.z, v.z);
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g.w, d.w, p.w, m.w, v.w);
    reinterpret_cast<float4*>(a.master)[i] = p;
    reinterpret_cast<float4*>(a.exp_avg)[i] = m;
    reinterpret_cast<float4*>(a.exp_avg_sq)[i] = v;
  }
  for (int64_t i = vec_count * 4 + int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < a.count; i += stride) {
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, a.grad[i], a.decay_mask[i], a.master[i],
                  a.exp_avg[i], a.exp_avg_sq[i]);
  }
}

}  // namespace

size_t sum_of_squares_workspace(int64_t count) { return sizeof(double) * blocks_for(count, 4); }

void sum_of_squares(int64_t count, const float* x, double* out, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream) {
  const int blocks = blocks_for(count, 4);
  HYDRA_CHECK(workspace_bytes >= sizeof(double) * blocks,
              "sum_of_squares: workspace of " << workspace_bytes << " bytes, needs " << sizeof(double) * blocks);
  auto* partials = static_cast<double*>(workspace);
  sum_of_squares_partials<<<blocks, kThreads, 0, stream>>>(count, x, partials);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
  sum_partials<<<1, kThreads, 0, stream>>>(blocks, partials, out);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

void adamw_flat_update(const AdamWFlat& args, cudaStream_t stream) {
  if (args.count == 0) return;
  adamw_flat_kernel<<<blocks_for(args.count, 4), kThreads, 0, stream>>>(args);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace hydra::kernels
