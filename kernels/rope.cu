// Fused RoPE and RMSNorm-then-RoPE (launchers in rope.h).
//
// Design invariants
// - A block takes `tile` consecutive tokens, all their heads. It first computes the cos/sin of
//   every (token, frequency) of the tile into shared memory (angle = position * theta^(-2i/D)
//   in float64, reduced modulo 2 pi in float64, then sincosf in float32), once per token and
//   frequency: the heads of a token share them. The tile is sized so that a block has about as
//   many rows (token, head) as it has lane groups, and its table stays under 16 KiB.
// - Then one group of `lanes` lanes per row (token, head); each lane owns VEC consecutive pairs
//   (i, i + D/2): a 16-byte vector from each half when D/2 and every base pointer allow.
// - Row loops run the same number of iterations on every lane of a warp (rows past the tile
//   are carried as dead), because the norm's sum of squares is reduced with warp shuffles.
// - Float32 arithmetic. With the norm, its output is rounded to the storage type before the
//   rotation, where the unfused ops hold it; the rotation itself rounds once, on store.
#include "kernels/rope.h"

#include <algorithm>
#include <cmath>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::group_sum;
using vector_io::load;
using vector_io::round_to;
using vector_io::store;

constexpr int kThreads = 128;
constexpr int kTableBytes = 16 * 1024;

struct RopeArgs {
  int64_t tokens = 0;
  int heads = 0, half = 0, lanes = 1, tile = 1;
  double log2_theta = 0.0;
  float sign = 1.f;  // +1 forward, -1 inverse
  float eps = 0.f;
  const void* x = nullptr;
  const void* weight = nullptr;  // norm weight [2 * half]
  const int64_t* positions = nullptr;
  void* out = nullptr;
  float* rstd = nullptr;
};

template <typename T, int VEC, bool NORM>
__global__ void __launch_bounds__(kThreads) rope_kernel(const RopeArgs a) {
  extern __shared__ float s_table[];  // cos [tile][half], then sin [tile][half]
  float* s_cos = s_table;
  float* s_sin = s_table + a.tile * a.half;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * a.tile;
  const int D = 2 * a.half;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int idx = threadIdx.x; idx < a.tile * a.half; idx += kThreads) {
    const int t = idx / a.half, i = idx % a.half;
    const int64_t token = tok0 + t;
    float c = 1.f, s = 0.f;
    if (token < a.tokens) {
      const double inv_freq = exp2(-(2.0 * i / D) * a.log2_theta);
      const double angle = static_cast<double>(a.positions[token]) * inv_freq;
      const double reduced = fma(-rint(angle * (1.0 / kTwoPi)), kTwoPi, angle);
      sincosf(static_cast<float>(reduced), &s, &c);
    }
    s_cos[idx] = c;
    s_sin[idx] = a.sign * s;
  }
  __syncthreads();

  const int groups_per_block = kThreads / a.lanes;
  const int group = threadIdx.x / a.lanes, sub = threadIdx.x % a.lanes;
  const int rows = a.tile * a.heads;
  for (int first = 0; first < rows; first += groups_per_block) {
    const int j = first + group;
    const int t = j / a.heads;
    const int64_t token = tok0 + t;
    const bool live = j < rows && token < a.tokens;
    const int64_t base = live ? (token * a.heads + j % a.heads) * D : 0;
    const T* x = static_cast<const T*>(a.x) + base;
    float rs = 1.f;
    if constexpr (NORM) {
      float ss = 0.f;
      if (live) {
        for (int i = sub * VEC; i < a.half; i += a.lanes * VEC) {
          float v1[VEC], v2[VEC];
          load<T, VEC>(x + i, v1);
          load<T, VEC>(x + a.half + i, v2);
#pragma unroll
          for (int k = 0; k < VEC; ++k) ss += v1[k] * v1[k] + v2[k] * v2[k];
        }
      }
      ss = group_sum(ss, a.lanes);
      rs = rsqrtf(ss / static_cast<float>(D) + a.eps);
      if (live && sub == 0) a.rstd[base / D] = rs;
    }
    if (!live) continue;
    T* out = static_cast<T*>(a.out) + base;
    for (int i = sub * VEC; i < a.half; i += a.lanes * VEC) {
      float v1[VEC], v2[VEC], o1[VEC], o2[VEC];
      load<T, VEC>(x + i, v1);
      load<T, VEC>(x + a.half + i, v2);
      if constexpr (NORM) {
        float w1[VEC], w2[VEC];
        load<T, VEC>(static_cast<const T*>(a.weight) + i, w1);
        load<T, VEC>(static_cast<const T*>(a.weight) + a.half + i, w2);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          v1[k] = round_to<T>(round_to<T>(v1[k] * rs) * w1[k]);
          v2[k] = round_to<T>(round_to<T>(v2[k] * rs) * w2[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float c = s_cos[t * a.half + i + k], s = s_sin[t * a.half + i + k];
        o1[k] = v1[k] * c - v2[k] * s;
        o2[k] = v2[k] * c + v1[k] * s;
      }
      store<T, VEC>(out + i, o1);
      store<T, VEC>(out + a.half + i, o2);
    }
  }
}

template <typename T, bool NORM>
void launch(const RopeShape& shape, RopeArgs a, cudaStream_t stream) {
  HYDRA_CHECK(shape.tokens >= 0 && shape.heads > 0 && shape.head_dim > 0 && shape.head_dim % 2 == 0,
              "rope kernels: tokens " << shape.tokens << ", heads " << shape.heads << ", head_dim " << shape.head_dim);
  if (shape.tokens == 0) return;
  constexpr int kVec = vector_io::kMaxVec<T>;
  a.tokens = shape.tokens;
  a.heads = shape.heads;
  a.half = shape.head_dim / 2;
  a.log2_theta = std::log2(shape.theta);
  const bool vec = a.half % kVec == 0 && vector_io::aligned16(a.x) && vector_io::aligned16(a.out) &&
                   vector_io::aligned16(a.weight);
  a.lanes = vector_io::lanes_for((a.half + (vec ? kVec : 1) - 1) / (vec ? kVec : 1));
  const int groups_per_block = kThreads / a.lanes;
  const int max_tile = std::max(1, kTableBytes / static_cast<int>(2 * sizeof(float) * a.half));
  a.tile = std::min(max_tile, std::max(1, groups_per_block / a.heads));
  a.tile = static_cast<int>(std::min<int64_t>(a.tile, shape.tokens));
  const unsigned blocks = static_cast<unsigned>((shape.tokens + a.tile - 1) / a.tile);
  const size_t smem = 2 * sizeof(float) * a.tile * a.half;
  if (vec) {
    rope_kernel<T, kVec, NORM><<<blocks, kThreads, smem, stream>>>(a);
  } else {
    rope_kernel<T, 1, NORM><<<blocks, kThreads, smem, stream>>>(a);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

template <bool NORM>
void dispatch(const RopeShape& shape, const RopeArgs& a, cudaStream_t stream) {
  if (shape.dtype == StorageType::kBFloat16) {
    launch<bf16, NORM>(shape, a, stream);
  } else {
    launch<float, NORM>(shape, a, stream);
  }
}

}  // namespace

void rope_forward(const RopeShape& shape, const void* x, const int64_t* positions, void* out, cudaStream_t stream) {
  RopeArgs a;
  a.x = x;
  a.positions = positions;
  a.out = out;
  dispatch<false>(shape, a, stream);
}

void rope_backward(const RopeShape& shape, const void* dy, const int64_t* positions, void* dx, cudaStream_t stream) {
  RopeArgs a;
  a.sign = -1.f;
  a.x = dy;
  a.positions = positions;
  a.out = dx;
  dispatch<false>(shape, a, stream);
}

void rms_norm_rope_forward(const RopeShape& shape, float eps, const void* x, const void* weight,
                           const int64_t* positions, void* out, float* rstd, cudaStream_t stream) {
  RopeArgs a;
  a.eps = eps;
  a.x = x;
  a.weight = weight;
  a.positions = positions;
  a.out = out;
  a.rstd = rstd;
  dispatch<true>(shape, a, stream);
}

}  // namespace hydra::kernels
