#include "kernels/optimizer_update.h"

#include <algorithm>
#include <vector>

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

// adamw_tensors_update: up to kBatch tensors per launch, passed by value (kernel parameters are
// captured with a CUDA graph, so nothing on the host must outlive the launch). The blocks walk
// chunks of kChunk elements; chunk c belongs to the tensor whose first_chunk range holds it.
constexpr int kBatch = 48;
constexpr int64_t kChunk = 8192;

struct TensorBatch {
  AdamWTensor t[kBatch];
  int64_t first_chunk[kBatch + 1];
  int n;
};

template <typename T>
__device__ void adamw_tensor_chunk(const AdamWFlat& a, const AdamWScalars& s, const AdamWTensor& t, int64_t begin,
                                   int64_t end, bool aligned) {
  const T* grad = static_cast<const T*>(t.grad);
  T* value = static_cast<T*>(t.value);
  const uint8_t decays = t.decays ? 1 : 0;
  const auto one = [&](int64_t i) {
    const int64_t k = t.offset + i;
    float p = a.master[k], m = a.exp_avg[k], v = a.exp_avg_sq[k];
    adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, grad ? vector_io::to_float(grad[i]) : 0.0f,
                  decays, p, m, v);
    a.master[k] = p;
    a.exp_avg[k] = m;
    a.exp_avg_sq[k] = v;
    value[i] = vector_io::from_float<T>(p);
  };
  // The fp32 state (24 of the 28 bytes an element moves) goes in 16-byte vectors aligned in the
  // flat layout. A tensor's offset there is any number, so its elements split into a head of
  // fewer than 4 before the first aligned one, whole vectors, and a tail; the parameter and its
  // gradient, at the same indices, go one element at a time (a warp's accesses still cover
  // whole sectors).
  const int64_t kb = t.offset + begin, ke = t.offset + end;
  const int64_t vb = aligned ? min(ke, (kb + 3) / 4 * 4) : ke;
  const int64_t ve = max(vb, ke / 4 * 4);
  for (int64_t k = kb + threadIdx.x; k < vb; k += blockDim.x) one(k - t.offset);
  for (int64_t k = ve + threadIdx.x; k < ke; k += blockDim.x) one(k - t.offset);
  // kUnroll vectors a thread, blockDim apart, all loaded before any is computed: bytes in flight.
  constexpr int kUnroll = 2;
  const int64_t vectors = (ve - vb) / 4, first = vb / 4, i0 = vb - t.offset;
  float4* master = reinterpret_cast<float4*>(a.master) + first;
  float4* exp_avg = reinterpret_cast<float4*>(a.exp_avg) + first;
  float4* exp_avg_sq = reinterpret_cast<float4*>(a.exp_avg_sq) + first;
  for (int64_t base = threadIdx.x; base < vectors; base += int64_t{kUnroll} * blockDim.x) {
    float4 p[kUnroll], m[kUnroll], v[kUnroll];
    float g[kUnroll][4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + int64_t{u} * blockDim.x;
      if (j < vectors) {
        p[u] = master[j], m[u] = exp_avg[j], v[u] = exp_avg_sq[j];
#pragma unroll
        for (int e = 0; e < 4; ++e) g[u][e] = grad ? vector_io::to_float(grad[i0 + 4 * j + e]) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + int64_t{u} * blockDim.x;
      if (j < vectors) {
        adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g[u][0], decays, p[u].x, m[u].x, v[u].x);
        adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g[u][1], decays, p[u].y, m[u].y, v[u].y);
        adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g[u][2], decays, p[u].z, m[u].z, v[u].z);
        adamw_element(s, a.one_minus_beta1, a.one_minus_beta2, a.eps, g[u][3], decays, p[u].w, m[u].w, v[u].w);
        master[j] = p[u];
        exp_avg[j] = m[u];
        exp_avg_sq[j] = v[u];
        T* out = value + i0 + 4 * j;
        out[0] = vector_io::from_float<T>(p[u].x);
        out[1] = vector_io::from_float<T>(p[u].y);
        out[2] = vector_io::from_float<T>(p[u].z);
        out[3] = vector_io::from_float<T>(p[u].w);
      }
    }
  }
}

__global__ void adamw_tensors_kernel(const AdamWFlat a, const TensorBatch b) {
  const AdamWScalars s = read_scalars(a.scalars, a.finite);
  const bool aligned = (reinterpret_cast<uintptr_t>(a.master) | reinterpret_cast<uintptr_t>(a.exp_avg) |
                        reinterpret_cast<uintptr_t>(a.exp_avg_sq)) % 16 == 0;
  for (int64_t c = blockIdx.x; c < b.first_chunk[b.n]; c += gridDim.x) {
    int i = 0;
    while (c >= b.first_chunk[i + 1]) ++i;
    const AdamWTensor& t = b.t[i];
    const int64_t begin = (c - b.first_chunk[i]) * kChunk, end = begin + kChunk < t.count ? begin + kChunk : t.count;
    if (t.type == StorageType::kBFloat16) {
      adamw_tensor_chunk<vector_io::bf16>(a, s, t, begin, end, aligned);
    } else {
      adamw_tensor_chunk<float>(a, s, t, begin, end, aligned);
    }
  }
}

// sum_of_squares: up to kBatch inputs per launch, by value, walked in chunks like the AdamW
// batches; each block adds its chunks' squares in a fixed order into one partial.
struct SquaresBatch {
  const void* x[kBatch];
  int64_t count[kBatch];
  int64_t first_chunk[kBatch + 1];
  bool bf16[kBatch];
  int n;
};

template <typename T>
__device__ double squares_in(const T* x, int64_t begin, int64_t end) {
  constexpr int kVec = 16 / sizeof(T);
  double acc = 0.0;
  int64_t i = begin;
  if (reinterpret_cast<uintptr_t>(x) % 16 == 0) {  // begin is a multiple of kChunk: aligned too
    for (int64_t j = begin + int64_t{threadIdx.x} * kVec; j + kVec <= end; j += int64_t{blockDim.x} * kVec) {
      float v[kVec];
      vector_io::load<T, kVec>(x + j, v);
#pragma unroll
      for (int k = 0; k < kVec; ++k) acc += double(v[k]) * v[k];
    }
    i = begin + (end - begin) / kVec * kVec;
  }
  for (int64_t j = i + threadIdx.x; j < end; j += blockDim.x) {
    const double v = vector_io::to_float(x[j]);
    acc += v * v;
  }
  return acc;
}

__global__ void sum_of_squares_kernel(const SquaresBatch b, double* __restrict__ partials) {
  double acc = 0.0;
  for (int64_t c = blockIdx.x; c < b.first_chunk[b.n]; c += gridDim.x) {
    int i = 0;
    while (c >= b.first_chunk[i + 1]) ++i;
    const int64_t begin = (c - b.first_chunk[i]) * kChunk,
                  end = begin + kChunk < b.count[i] ? begin + kChunk : b.count[i];
    acc += b.bf16[i] ? squares_in(static_cast<const vector_io::bf16*>(b.x[i]), begin, end)
                     : squares_in(static_cast<const float*>(b.x[i]), begin, end);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// The batches sum_of_squares launches, and the blocks of each.
std::vector<SquaresBatch> squares_batches(const SquaresInput* inputs, int n) {
  std::vector<SquaresBatch> out;
  for (int first = 0; first < n; first += kBatch) {
    SquaresBatch b{};
    b.n = std::min(kBatch, n - first);
    for (int i = 0; i < b.n; ++i) {
      const SquaresInput& in = inputs[first + i];
      b.x[i] = in.x;
      b.count[i] = in.count;
      b.bf16[i] = in.type == StorageType::kBFloat16;
      b.first_chunk[i + 1] = b.first_chunk[i] + (in.count + kChunk - 1) / kChunk;
    }
    out.push_back(b);
  }
  return out;
}

int squares_blocks(const SquaresBatch& b) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(b.first_chunk[b.n], kMaxBlocks)));
}

}  // namespace

size_t sum_of_squares_workspace(const SquaresInput* inputs, int n) {
  size_t blocks = 0;
  for (const SquaresBatch& b : squares_batches(inputs, n)) blocks += squares_blocks(b);
  return sizeof(double) * std::max<size_t>(blocks, 1);
}

void sum_of_squares(const SquaresInput* inputs, int n, double* out, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream) {
  const size_t needed = sum_of_squares_workspace(inputs, n);
  HYDRA_CHECK(workspace_bytes >= needed,
              "sum_of_squares: workspace of " << workspace_bytes << " bytes, needs " << needed);
  auto* partials = static_cast<double*>(workspace);
  int written = 0;
  for (const SquaresBatch& b : squares_batches(inputs, n)) {
    const int blocks = squares_blocks(b);
    sum_of_squares_kernel<<<blocks, kThreads, 0, stream>>>(b, partials + written);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
    written += blocks;
  }
  sum_partials<<<1, kThreads, 0, stream>>>(written, partials, out);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

void adamw_flat_update(const AdamWFlat& args, cudaStream_t stream) {
  if (args.count == 0) return;
  adamw_flat_kernel<<<blocks_for(args.count, 4), kThreads, 0, stream>>>(args);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

void adamw_tensors_update(const AdamWFlat& state, const AdamWTensor* tensors, int n, cudaStream_t stream) {
  for (int first = 0; first < n; first += kBatch) {
    TensorBatch b{};
    b.n = std::min(kBatch, n - first);
    b.first_chunk[0] = 0;
    for (int i = 0; i < b.n; ++i) {
      b.t[i] = tensors[first + i];
      b.first_chunk[i + 1] = b.first_chunk[i] + (b.t[i].count + kChunk - 1) / kChunk;
    }
    if (b.first_chunk[b.n] == 0) continue;
    const int blocks = static_cast<int>(std::min<int64_t>(b.first_chunk[b.n], kMaxBlocks));
    adamw_tensors_kernel<<<blocks, kThreads, 0, stream>>>(state, b);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  }
}

}  // namespace hydra::kernels
