// Building blocks of the fused CCQA prologue kernels (kernels/ccqa_prologue.cu, whose opening
// comment states the design invariants): sizes and shared-memory layouts shared by host and
// device, the kernel arguments, and the per-tile stages (load, RoPE table, conv1, conv2 with
// qk-mean, conv2's input gradient). Included by ccqa_prologue.cu only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/ccqa_prologue.h"

namespace hydra::kernels::ccqa_prologue_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxHalf = 32;  // d_h / 2 for d_h <= 64
// Output tokens per thread in the convolution loops (register tile). 5 rather than 4: at d_h 16
// and 256 threads, a 64-token tile's 68 and 66 rows (with halos) are one round of tasks each
// (13 x 16 + 3 x 16 and 13 x 16 + 16) instead of 17 x 16 and 18 x 16, two rounds.
constexpr int kRows = 5;

// Row stride (floats) of the staged conv2 weights: a multiple of 4 so that rows hold float4s;
// DH K / 4 is even for d_h >= 16, so the stride in 16-byte units is odd and the eight lanes of a
// quarter-warp that read eight rows with float4 loads hit distinct banks.
__host__ __device__ constexpr int w_stride(int dh, int K) { return dh * K + 4; }

__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_f(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
  // xor butterfly: a fixed order, so the result does not depend on scheduling.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the LANES lanes of a row group (LANES a power of two dividing 32; groups are
// aligned blocks of lanes), as warp_sum: a fixed xor order.
template <int LANES>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum of v over the warp's row groups of LANES lanes (lanes l, l + LANES, ...), fixed order.
template <int LANES>
__device__ __forceinline__ float across_groups(float v) {
#pragma unroll
  for (int o = LANES; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Arguments shared by both kernels (passed by value).
template <typename T>
struct Args {
  int B, S, H, Hkv, G, T_tile, n_tiles;
  float gamma, eps;
  double inv_freq[kMaxHalf];  // theta^(-2i/d_h)
  const T* q0;
  const T* k0;
  const int64_t* positions;
  CcqaPrologueParams p;
  // forward
  T* q;
  T* k;
  // backward
  const T* dq;
  const T* dk;
  T* dq0;
  T* dk0;
  float* ws;       // [P][H_kv][slice]
  int64_t slice;   // floats per (block, group)
};

// Offsets (floats) inside one group's workspace slice: conv1 w/b, conv2 w/b (group channels
// lh * d_h + c, lh < G the query heads, lh = G the key head), then q_norm, k_norm, tau.
struct SliceLayout {
  int64_t w1, b1, w2, b2, qn, kn, tau, size;
};
__host__ __device__ inline SliceLayout slice_layout(int G, int dh, int K) {
  const int64_t cg = static_cast<int64_t>(G + 1) * dh;
  SliceLayout l;
  l.w1 = 0;
  l.b1 = l.w1 + cg * K;
  l.w2 = l.b1 + cg;
  l.b2 = l.w2 + cg * dh * K;
  l.qn = l.b2 + cg;
  l.kn = l.qn + dh;
  l.tau = l.kn + dh;
  l.size = l.tau + 1;
  return l;
}

// Shared-memory sizes (floats). Forward: u rows T+2HL (whole group), conv1 rows T+HL and conv2
// weights (one head at a time), y rows T, cos/sin T x d_h/2.
__host__ __device__ inline int64_t fwd_smem_floats(int T, int dh, int K, bool conv, int G) {
  const int hl = conv ? K - 1 : 0;
  const int64_t cg = static_cast<int64_t>(G + 1) * dh;
  return (T + 2 * hl) * cg + (conv ? (T + hl) * dh + dh * w_stride(dh, K) : 0) + T * dh + T * dh;
}
// Backward: u rows T+4HL, conv1 rows T+3HL, conv2 weights, y/G and incoming-gradient rows T+2HL, da rows T+HL,
// key G / query G sum / key dk0 rows T, cos/sin rows T+2HL, per-warp partials.
__host__ __device__ inline int64_t bwd_smem_floats(int T, int dh, int K, bool conv, int G) {
  const int hl = conv ? K - 1 : 0;
  const int64_t cg = static_cast<int64_t>(G + 1) * dh;
  return (T + 4 * hl) * cg + (conv ? (T + 3 * hl) * dh + dh * w_stride(dh, K) + (T + hl) * dh : 0) +
         2 * (T + 2 * hl) * dh + 3 * T * dh + (T + 2 * hl) * dh + 2 * kWarps * dh + kWarps;
}

// cos/sin of position * inv_freq for `rows` tokens from t0, in float64 then rounded.
template <typename T, int DH>
__device__ void rope_table(const Args<T>& a, int b, int t0, int rows, float* s_cos, float* s_sin) {
  constexpr int HALF = DH / 2;
  for (int i = threadIdx.x; i < rows * HALF; i += kThreads) {
    const int t = t0 + i / HALF;
    double c = 1.0, s = 0.0;
    if (t < a.S) sincos(static_cast<double>(a.positions[static_cast<int64_t>(b) * a.S + t]) * a.inv_freq[i % HALF], &s, &c);
    s_cos[i] = static_cast<float>(c);
    s_sin[i] = static_cast<float>(s);
  }
}

// q0/k0 of group g for tokens [t_first, t_first + rows) into s_u [rows][(G+1) d_h], zero
// outside [0, S).
template <typename T, int DH>
__device__ void load_group(const Args<T>& a, int b, int g, int t_first, int rows, float* s_u) {
  const int cg = (a.G + 1) * DH;
  for (int i = threadIdx.x; i < rows * cg; i += kThreads) {
    const int r = i / cg, ch = i % cg, lh = ch / DH, c = ch % DH;
    const int t = t_first + r;
    float v = 0.f;
    if (t >= 0 && t < a.S) {
      const int64_t tok = static_cast<int64_t>(b) * a.S + t;
      v = lh < a.G ? load_f(a.q0, (tok * a.H + g * a.G + lh) * DH + c) : load_f(a.k0, (tok * a.Hkv + g) * DH + c);
    }
    s_u[i] = v;
  }
}

// Conv2 weights of one head into s_w[c][j][c'] with row stride w_stride: float4 loads along c'
// with lanes varying c (forward) and scalar loads with lanes varying c' (backward) are both
// conflict-free.
template <int DH, int K>
__device__ void stage_conv2(const float* w2_head, float* s_w) {
  constexpr int W = w_stride(DH, K);
  for (int i = threadIdx.x; i < DH * DH * K; i += kThreads) {
    const int c = i / (DH * K), rem = i % (DH * K), cp = rem / K, j = rem % K;
    s_w[c * W + j * DH + cp] = w2_head[i];
  }
}

// Conv1 (depthwise) of head lh for `rows` tokens from t_first; input row r + j of s_u (whose
// first row is token t_first - HL). Zero at t < 0: conv2's zero padding.
template <int DH, int K>
__device__ void conv1_rows(const float* s_u, int cg, int lh, int t_first, int rows, const float* w1, const float* b1,
                           float* s_a) {
  for (int i = threadIdx.x; i < rows * DH; i += kThreads) {
    const int r = i / DH, c = i % DH;
    float acc = 0.f;
    if (t_first + r >= 0) {
      acc = b1[c];
#pragma unroll
      for (int j = 0; j < K; ++j) acc += w1[c * K + j] * s_u[(r + j) * cg + lh * DH + c];
    }
    s_a[i] = acc;
  }
}

// Conv2 output channel c for NR consecutive rows from r0: acc[i] = bias + sum over c', j of
// w[c][c'][j] a[r0 + i + j][c']. Each float4 of a (a broadcast: the warp's lanes share the rows)
// serves K taps and NR rows from registers.
template <int DH, int K, int NR>
__device__ __forceinline__ void conv2_rows(const float* s_a, const float* s_w, float bias, int r0, int c,
                                           float (&acc)[NR]) {
#pragma unroll
  for (int i = 0; i < NR; ++i) acc[i] = bias;
  const float* wrow = s_w + c * w_stride(DH, K);
#pragma unroll 2
  for (int cp = 0; cp < DH; cp += 4) {
    float4 w[K];
#pragma unroll
    for (int j = 0; j < K; ++j) w[j] = *reinterpret_cast<const float4*>(wrow + j * DH + cp);
#pragma unroll
    for (int m = 0; m < NR + K - 1; ++m) {
      const float4 av = *reinterpret_cast<const float4*>(s_a + (r0 + m) * DH + cp);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const int i = m - j;
        if (i >= 0 && i < NR) acc[i] += w[j].x * av.x + w[j].y * av.y + w[j].z * av.z + w[j].w * av.w;
      }
    }
  }
}

// The qk-mean term of channel c of head lh at one token (urow: that token's q0/k0 of the group).
__device__ __forceinline__ float qk_mean_term(const float* urow, int G, int lh, int dh, int c, float gamma) {
  if (gamma == 0.f) return 0.f;
  const float kv = urow[G * dh + c];
  if (lh < G) return 0.5f * gamma * (urow[lh * dh + c] + kv);
  float qs = 0.f;
  for (int h = 0; h < G; ++h) qs += urow[h * dh + c];
  return 0.5f * gamma * (kv + qs / static_cast<float>(G));
}

// Pre-norm value of head lh for `rows` tokens: conv2(conv1) (or q0/k0 itself without convs)
// plus the qk-mean term. s_a row r + j feeds output row r; s_u row r + u_off is the output's
// own token. Rows go kRows to a thread, the remainder (rows % kRows) one to a thread.
template <int DH, int K, bool CONV>
__device__ void premix_rows(const float* s_u, const float* s_a, const float* s_w, const float* b2, int G, int lh,
                            int rows, int u_off, float gamma, float* s_y) {
  const int cg = (G + 1) * DH;
  const int tiles = CONV ? rows / kRows : 0, singles = rows - tiles * kRows;
  for (int task = threadIdx.x; task < (tiles + singles) * DH; task += kThreads) {
    const int c = task % DH, q = task / DH;
    if (CONV && q < tiles) {
      float acc[kRows];
      conv2_rows<DH, K, kRows>(s_a, s_w, b2[c], q * kRows, c, acc);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = q * kRows + i;
        s_y[r * DH + c] = acc[i] + qk_mean_term(s_u + (r + u_off) * cg, G, lh, DH, c, gamma);
      }
    } else {
      const int r = tiles * kRows + (q - tiles);
      float acc[1];
      if constexpr (CONV) conv2_rows<DH, K, 1>(s_a, s_w, b2[c], r, c, acc);
      else acc[0] = s_u[(r + u_off) * cg + lh * DH + c];
      s_y[r * DH + c] = acc[0] + qk_mean_term(s_u + (r + u_off) * cg, G, lh, DH, c, gamma);
    }
  }
}

// Gradient of conv2's input (conv1's output) for NR consecutive rows from r0, channel c':
// acc[i] = sum over c, j of w[c][c'][j] G[r0 + i + K-1 - j][c]. Each float4 of G (four c, a
// broadcast) serves K taps and NR rows.
template <int DH, int K, int NR>
__device__ __forceinline__ void conv2_input_grad_rows(const float* s_g, const float* s_w, int r0, int cp,
                                                      float (&acc)[NR]) {
  constexpr int W = w_stride(DH, K);
#pragma unroll
  for (int i = 0; i < NR; ++i) acc[i] = 0.f;
#pragma unroll 2
  for (int c = 0; c < DH; c += 4) {
    float w[4][K];
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
#pragma unroll
      for (int j = 0; j < K; ++j) w[cc][j] = s_w[(c + cc) * W + j * DH + cp];
    }
#pragma unroll
    for (int m = 0; m < NR + K - 1; ++m) {
      const float4 gv = *reinterpret_cast<const float4*>(s_g + (r0 + m) * DH + c);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const int i = m - (K - 1) + j;
        if (i >= 0 && i < NR) acc[i] += w[0][j] * gv.x + w[1][j] * gv.y + w[2][j] * gv.z + w[3][j] * gv.w;
      }
    }
  }
}

}  // namespace hydra::kernels::ccqa_prologue_detail
