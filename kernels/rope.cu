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

// The cos and sin (times `sign`) of every (token, frequency) of the block's tile: s_cos
// [tile][half], then s_sin. Ends with a barrier.
__device__ void fill_angle_table(int64_t tok0, int tile, int half, int64_t tokens, double log2_theta, float sign,
                                 const int64_t* positions, float* s_cos, float* s_sin) {
  const int D = 2 * half;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int idx = threadIdx.x; idx < tile * half; idx += blockDim.x) {
    const int t = idx / half, i = idx % half;
    const int64_t token = tok0 + t;
    float c = 1.f, s = 0.f;
    if (token < tokens) {
      const double inv_freq = exp2(-(2.0 * i / D) * log2_theta);
      const double angle = static_cast<double>(positions[token]) * inv_freq;
      const double reduced = fma(-rint(angle * (1.0 / kTwoPi)), kTwoPi, angle);
      sincosf(static_cast<float>(reduced), &s, &c);
    }
    s_cos[idx] = c;
    s_sin[idx] = sign * s;
  }
  __syncthreads();
}

template <typename T, int VEC, bool NORM>
__global__ void __launch_bounds__(kThreads) rope_kernel(const RopeArgs a) {
  extern __shared__ float s_table[];  // cos [tile][half], then sin [tile][half]
  float* s_cos = s_table;
  float* s_sin = s_table + a.tile * a.half;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * a.tile;
  const int D = 2 * a.half;
  fill_angle_table(tok0, a.tile, a.half, a.tokens, a.log2_theta, a.sign, a.positions, s_cos, s_sin);

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

// ---- MLA's [a ; RoPE(b)] ----------------------------------------------------------------------
// Work items, not lane groups: a row (token, head) is copy_dim / VEC copy items and half / VEC
// rotation items (each a vector from both halves), numbered consecutively so that neighbouring
// threads touch neighbouring vectors. No reductions across lanes, so no dead rows are carried.
struct ConcatArgs {
  int64_t tokens = 0;
  int heads = 0, b_heads = 0, copy_dim = 0, half = 0, tile = 1;
  double log2_theta = 0.0;
  const int64_t* positions = nullptr;
  const void* in = nullptr;  // forward: a; backward: dout
  const void* b = nullptr;   // forward only
  void* out = nullptr;       // forward: out; backward: da
  void* db = nullptr;        // backward only
};

template <typename T, int VEC>
__device__ __forceinline__ void rotate_store(const float (&v1)[VEC], const float (&v2)[VEC], const float* c,
                                             const float* s, T* out1, T* out2) {
  float o1[VEC], o2[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    o1[k] = v1[k] * c[k] - v2[k] * s[k];
    o2[k] = v2[k] * c[k] + v1[k] * s[k];
  }
  store<T, VEC>(out1, o1);
  store<T, VEC>(out2, o2);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) rope_concat_forward_kernel(const ConcatArgs a) {
  extern __shared__ float s_table[];
  float* s_cos = s_table;
  float* s_sin = s_table + a.tile * a.half;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * a.tile;
  fill_angle_table(tok0, a.tile, a.half, a.tokens, a.log2_theta, 1.f, a.positions, s_cos, s_sin);
  const int copy_items = a.copy_dim / VEC, rot_items = a.half / VEC, per_row = copy_items + rot_items;
  const int out_dim = a.copy_dim + 2 * a.half;
  const int tile_tokens = a.tokens - tok0 < a.tile ? static_cast<int>(a.tokens - tok0) : a.tile;
  for (int idx = threadIdx.x; idx < tile_tokens * a.heads * per_row; idx += kThreads) {
    const int row = idx / per_row, item = idx % per_row;
    const int t = row / a.heads, h = row % a.heads;
    const int64_t token = tok0 + t;
    T* out = static_cast<T*>(a.out) + (token * a.heads + h) * out_dim;
    if (item < copy_items) {
      const T* src = static_cast<const T*>(a.in) + (token * a.heads + h) * a.copy_dim + item * VEC;
      float v[VEC];
      load<T, VEC>(src, v);
      store<T, VEC>(out + item * VEC, v);
      continue;
    }
    const int i = (item - copy_items) * VEC;
    const T* b = static_cast<const T*>(a.b) + (token * a.b_heads + (a.b_heads == 1 ? 0 : h)) * (2 * a.half);
    float v1[VEC], v2[VEC];
    load<T, VEC>(b + i, v1);
    load<T, VEC>(b + a.half + i, v2);
    rotate_store<T, VEC>(v1, v2, s_cos + t * a.half + i, s_sin + t * a.half + i, out + a.copy_dim + i,
                         out + a.copy_dim + a.half + i);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) rope_concat_backward_kernel(const ConcatArgs a) {
  extern __shared__ float s_table[];
  float* s_cos = s_table;
  float* s_sin = s_table + a.tile * a.half;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * a.tile;
  fill_angle_table(tok0, a.tile, a.half, a.tokens, a.log2_theta, -1.f, a.positions, s_cos, s_sin);
  const int copy_items = a.copy_dim / VEC, rot_items = a.half / VEC;
  const int out_dim = a.copy_dim + 2 * a.half;
  const int tile_tokens = a.tokens - tok0 < a.tile ? static_cast<int>(a.tokens - tok0) : a.tile;
  const int copies = tile_tokens * a.heads * copy_items;
  const T* dout = static_cast<const T*>(a.in);
  for (int idx = threadIdx.x; idx < copies + tile_tokens * a.b_heads * rot_items; idx += kThreads) {
    if (idx < copies) {
      const int row = idx / copy_items, item = idx % copy_items;
      const int64_t r = tok0 * a.heads + row;  // (token, head) rows are consecutive
      float v[VEC];
      load<T, VEC>(dout + r * out_dim + item * VEC, v);
      store<T, VEC>(static_cast<T*>(a.out) + r * a.copy_dim + item * VEC, v);
      continue;
    }
    const int j = idx - copies;
    const int row = j / rot_items, i = (j % rot_items) * VEC;
    const int t = row / a.b_heads, bh = row % a.b_heads;
    const int64_t token = tok0 + t;
    // b_heads 1: the shared row's gradient is the sum over the heads (rotation is linear: sum, then rotate).
    const int h_first = a.b_heads == 1 ? 0 : bh, h_end = a.b_heads == 1 ? a.heads : bh + 1;
    float v1[VEC] = {}, v2[VEC] = {};
    for (int h = h_first; h < h_end; ++h) {
      const T* g = dout + (token * a.heads + h) * out_dim + a.copy_dim;
      float g1[VEC], g2[VEC];
      load<T, VEC>(g + i, g1);
      load<T, VEC>(g + a.half + i, g2);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        v1[k] += g1[k];
        v2[k] += g2[k];
      }
    }
    T* db = static_cast<T*>(a.db) + (token * a.b_heads + bh) * (2 * a.half);
    rotate_store<T, VEC>(v1, v2, s_cos + t * a.half + i, s_sin + t * a.half + i, db + i, db + a.half + i);
  }
}

template <typename T>
void launch_concat(const RopeConcatShape& shape, ConcatArgs a, bool backward, cudaStream_t stream) {
  const RopeShape& r = shape.rope;
  HYDRA_CHECK(r.tokens >= 0 && r.heads > 0 && r.head_dim > 0 && r.head_dim % 2 == 0 && shape.copy_dim >= 0 &&
                  (shape.b_heads == 1 || shape.b_heads == r.heads),
              "rope_concat kernels: tokens " << r.tokens << ", heads " << r.heads << ", head_dim " << r.head_dim
                                             << ", copy_dim " << shape.copy_dim << ", b_heads " << shape.b_heads);
  if (r.tokens == 0) return;
  constexpr int kVec = vector_io::kMaxVec<T>;
  a.tokens = r.tokens;
  a.heads = r.heads;
  a.b_heads = shape.b_heads;
  a.copy_dim = shape.copy_dim;
  a.half = r.head_dim / 2;
  a.log2_theta = std::log2(r.theta);
  const bool vec = a.half % kVec == 0 && a.copy_dim % kVec == 0 && vector_io::aligned16(a.in) &&
                   vector_io::aligned16(a.b) && vector_io::aligned16(a.out) && vector_io::aligned16(a.db);
  const int v = vec ? kVec : 1;
  // About four rounds of the block's threads per tile; the table stays under 16 KiB.
  const int per_token = a.heads * (a.copy_dim + a.half) / v;
  const int max_tile = std::max(1, kTableBytes / static_cast<int>(2 * sizeof(float) * a.half));
  a.tile = std::min(max_tile, std::max(1, 4 * kThreads / std::max(1, per_token)));
  a.tile = static_cast<int>(std::min<int64_t>(a.tile, r.tokens));
  const unsigned blocks = static_cast<unsigned>((r.tokens + a.tile - 1) / a.tile);
  const size_t smem = 2 * sizeof(float) * a.tile * a.half;
  if (backward) {
    if (vec) {
      rope_concat_backward_kernel<T, kVec><<<blocks, kThreads, smem, stream>>>(a);
    } else {
      rope_concat_backward_kernel<T, 1><<<blocks, kThreads, smem, stream>>>(a);
    }
  } else if (vec) {
    rope_concat_forward_kernel<T, kVec><<<blocks, kThreads, smem, stream>>>(a);
  } else {
    rope_concat_forward_kernel<T, 1><<<blocks, kThreads, smem, stream>>>(a);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

void dispatch_concat(const RopeConcatShape& shape, const ConcatArgs& a, bool backward, cudaStream_t stream) {
  if (shape.rope.dtype == StorageType::kBFloat16) {
    launch_concat<bf16>(shape, a, backward, stream);
  } else {
    launch_concat<float>(shape, a, backward, stream);
  }
}

}  // namespace

void rope_concat_forward(const RopeConcatShape& shape, const void* a, const void* b, const int64_t* positions,
                         void* out, cudaStream_t stream) {
  ConcatArgs args;
  args.in = a;
  args.b = b;
  args.positions = positions;
  args.out = out;
  dispatch_concat(shape, args, /*backward=*/false, stream);
}

void rope_concat_backward(const RopeConcatShape& shape, const void* dout, const int64_t* positions, void* da,
                          void* db, cudaStream_t stream) {
  ConcatArgs args;
  args.in = dout;
  args.positions = positions;
  args.out = da;
  args.db = db;
  dispatch_concat(shape, args, /*backward=*/true, stream);
}

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
