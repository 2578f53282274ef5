// Fused CCQA prologue, forward and backward (docs/MODEL.md CCQA steps 2-7; launchers in
// ccqa_prologue.h).
//
// Design invariants
// - Work unit: one KV group (its G = H/H_kv query heads and its key head) for a tile of T
//   consecutive tokens of one sequence. The group is the smallest unit closed under the
//   qk-mean, which couples a key head with its query heads at the same token (forward and
//   backward); every other step is per head and per token, or causal over at most K-1 tokens.
// - One read of q0/k0 per tile into shared memory (float32), with a left halo of 2(K-1)
//   tokens (conv1 then conv2; the backward also a right halo of 2(K-1) tokens, since the
//   transposed convolutions look ahead). Rows outside [0, S) read as zero: that is the
//   causal zero padding of conv1's input; conv2's input is padded with zeros too (not with
//   conv1's bias), so conv1 outputs at t < 0 are stored as zero.
// - All arithmetic in float32 (RoPE angles in float64); inputs and outputs are float32 or
//   bfloat16, rounded once on store.
// - The forward writes only q and k; nothing is saved. The backward recomputes the forward
//   of its tile (plus halo) from q0, k0.
// - Parameter gradients are deterministic: each backward block loops over a fixed set of
//   tiles (persistent grid, P blocks per group) and accumulates into its own workspace slice
//   (which it zeroes first: no memset), each element owned by one thread (plain read-modify-write, no atomics); the per-warp
//   norm/tau partials are summed in warp order; a last kernel sums the P slices in order.
// - The norm/RoPE loops work on row groups of d_h/2 lanes (lane f holds the RoPE pair f, f + d_h/2),
//   several tokens a warp at small d_h; their parameter partials stay in registers until a
//   head's rows are done, then are combined across the groups in a fixed order.
// - The convolution loops (conv2 forward, its input and weight gradients) keep kRows tokens or
//   a window of K taps per thread in registers and read shared memory in 16-byte vectors where
//   the warp's lanes share the address (broadcast); staged weights have an odd 16-byte stride.
// - Conv1 at t < 0 is zero and never receives a gradient; outputs and input gradients are
//   written only for t < S; incoming gradients at t >= S are treated as zero.
#include "kernels/ccqa_prologue.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "common/errors.h"
#include "kernels/ccqa_prologue_device.cuh"  // layouts, arguments and per-tile stages
#include "kernels/cuda_check.cuh"


namespace hydra::kernels {
namespace {

using namespace ccqa_prologue_detail;  // NOLINT: the building blocks of these kernels

template <typename T, int DH, int K, bool CONV>
__global__ void __launch_bounds__(kThreads) prologue_forward_kernel(const Args<T> a) {
  extern __shared__ float smem[];
  constexpr int HL = CONV ? K - 1 : 0;
  constexpr int HALF = DH / 2;
  const int G = a.G, cg = (G + 1) * DH, TT = a.T_tile;
  const int tile = blockIdx.x % a.n_tiles, b = blockIdx.x / a.n_tiles, g = blockIdx.y;
  const int t0 = tile * TT;
  float* s_u = smem;                                       // (TT + 2HL) x cg, first token t0 - 2HL
  float* s_a = s_u + (TT + 2 * HL) * cg;                   // (TT + HL) x DH, first token t0 - HL
  float* s_w = s_a + (CONV ? (TT + HL) * DH : 0);          // DH x w_stride
  float* s_y = s_w + (CONV ? DH * w_stride(DH, K) : 0);    // TT x DH
  float* s_cos = s_y + TT * DH;                            // TT x HALF
  float* s_sin = s_cos + TT * HALF;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kRowsPerWarp = 32 / HALF;

  rope_table<T, DH>(a, b, t0, TT, s_cos, s_sin);
  load_group<T, DH>(a, b, g, t0 - 2 * HL, TT + 2 * HL, s_u);
  __syncthreads();
  for (int lh = 0; lh <= G; ++lh) {
    const bool key = lh == G;
    const int64_t base = key ? static_cast<int64_t>(g) * DH : static_cast<int64_t>(g * G + lh) * DH;
    if constexpr (CONV) {
      stage_conv2<DH, K>((key ? a.p.conv2_k_w : a.p.conv2_q_w) + base * DH * K, s_w);
      conv1_rows<DH, K>(s_u, cg, lh, t0 - HL, TT + HL, (key ? a.p.conv1_k_w : a.p.conv1_q_w) + base * K,
                        (key ? a.p.conv1_k_b : a.p.conv1_q_b) + base, s_a);
      __syncthreads();
    }
    premix_rows<DH, K, CONV>(s_u, s_a, s_w, CONV ? (key ? a.p.conv2_k_b : a.p.conv2_q_b) + base : nullptr, G, lh, TT,
                             2 * HL, a.gamma, s_y);
    __syncthreads();
    // Norm, temperature and RoPE, a row group of d_h/2 lanes per token: lane f holds the RoPE
    // pair (f, f + d_h/2), so the group's sum of squares is the row's.
    const float scale = key ? expf(a.p.tau[g]) : 1.f;
    const float* wn = key ? a.p.k_norm_w : a.p.q_norm_w;
    T* out = key ? a.k : a.q;
    const int f = lane % HALF;
    const float w1 = wn[f], w2 = wn[f + HALF];
    for (int r0 = warp * kRowsPerWarp; r0 < TT; r0 += kWarps * kRowsPerWarp) {
      const int r = r0 + lane / HALF, t = t0 + r;
      const bool live = r < TT && t < a.S;
      const float y1 = live ? s_y[r * DH + f] : 0.f, y2 = live ? s_y[r * DH + f + HALF] : 0.f;
      const float rs = rsqrtf(group_sum<HALF>(y1 * y1 + y2 * y2) / DH + a.eps) * scale;
      if (!live) continue;  // no shuffles below
      const float x1 = y1 * rs * w1, x2 = y2 * rs * w2;
      const float cs = s_cos[r * HALF + f], sn = s_sin[r * HALF + f];
      const int64_t tok = static_cast<int64_t>(b) * a.S + t;
      const int64_t o = key ? (tok * a.Hkv + g) * DH : (tok * a.H + g * G + lh) * DH;
      store_f(out, o + f, x1 * cs - x2 * sn);
      store_f(out, o + f + HALF, x2 * cs + x1 * sn);
    }
    __syncthreads();  // s_a, s_w, s_y are reused by the next head
  }
}

// At most 80 registers, so that 3 blocks of 256 threads share a multiprocessor (d_h 16 takes
// 62 KB of shared memory a block; a few bytes spill) and the persistent grid, which takes every
// block that fits (backward_blocks_per_sm), hides more latency. Not measured apart from the rest
// of that change (2.19 -> 1.40 ms on small, docs/PERF.md 2026-12-03).
template <typename T, int DH, int K, bool CONV>
__global__ void __launch_bounds__(kThreads, 3) prologue_backward_kernel(const Args<T> a) {
  extern __shared__ float smem[];
  constexpr int HL = CONV ? K - 1 : 0;
  constexpr int HALF = DH / 2;
  const int G = a.G, cg = (G + 1) * DH, TT = a.T_tile, g = blockIdx.y;
  const int rows_y = TT + 2 * HL;  // tokens t0 .. t0 + TT + 2HL - 1 get their pre-norm gradient
  float* s_u = smem;                                       // (TT + 4HL) x cg, first token t0 - 2HL
  float* s_a = s_u + (TT + 4 * HL) * cg;                   // (TT + 3HL) x DH, first token t0 - HL
  float* s_w = s_a + (CONV ? (TT + 3 * HL) * DH : 0);      // DH x w_stride
  float* s_da = s_w + (CONV ? DH * w_stride(DH, K) : 0);   // (TT + HL) x DH, first token t0
  float* s_y = s_da + (CONV ? (TT + HL) * DH : 0);         // rows_y x DH: y, then its gradient
  float* s_gin = s_y + rows_y * DH;                        // rows_y x DH: gradient of q or k
  float* s_gk = s_gin + rows_y * DH;                       // TT x DH: key pre-norm gradient
  float* s_gsum = s_gk + TT * DH;                          // TT x DH: sum of the query ones
  float* s_dk = s_gsum + TT * DH;                          // TT x DH: dk0 without the q part
  float* s_cos = s_dk + TT * DH;                           // rows_y x HALF
  float* s_sin = s_cos + rows_y * HALF;
  float* s_dqn = s_sin + rows_y * HALF;                    // kWarps x DH
  float* s_dkn = s_dqn + kWarps * DH;                      // kWarps x DH
  float* s_dtau = s_dkn + kWarps * DH;                     // kWarps
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kRowsPerWarp = 32 / HALF;
  const SliceLayout L = slice_layout(G, DH, K);
  float* ws = a.ws + (static_cast<int64_t>(blockIdx.x) * a.Hkv + g) * a.slice;

  for (int i = threadIdx.x; i < 2 * kWarps * DH + kWarps; i += kThreads) s_dqn[i] = 0.f;
  // The convolutions' parameter sums start from zero here rather than by a memset before the
  // launch (one graph node fewer a layer); the loop's first barrier orders these stores before
  // any thread's first accumulation.
  if constexpr (CONV) {
    for (int64_t i = threadIdx.x; i < L.qn; i += kThreads) ws[i] = 0.f;
  }
  const float scale_k = expf(a.p.tau[g]);

  for (int w = blockIdx.x; w < a.B * a.n_tiles; w += gridDim.x) {
    const int b = w / a.n_tiles, t0 = (w % a.n_tiles) * TT;
    __syncthreads();  // the previous tile is done with shared memory
    rope_table<T, DH>(a, b, t0, rows_y, s_cos, s_sin);
    load_group<T, DH>(a, b, g, t0 - 2 * HL, TT + 4 * HL, s_u);
    for (int i = threadIdx.x; i < TT * DH; i += kThreads) s_gsum[i] = 0.f;
    __syncthreads();
    // The key head first: its pre-norm gradient feeds every query head's dq0 (qk-mean).
    for (int step = 0; step <= G; ++step) {
      const int lh = step == 0 ? G : step - 1;
      const bool key = lh == G;
      const int64_t base = key ? static_cast<int64_t>(g) * DH : static_cast<int64_t>(g * G + lh) * DH;
      const float* w1 = CONV ? (key ? a.p.conv1_k_w : a.p.conv1_q_w) + base * K : nullptr;
      // The head's incoming gradient, staged in one coalesced pass (its latency overlaps the
      // convolutions below instead of stalling the per-token norm loop).
      const T* gout = key ? a.dk : a.dq;
      const int heads = key ? a.Hkv : a.H, head = key ? g : g * G + lh;
      for (int i = threadIdx.x; i < rows_y * DH; i += kThreads) {
        const int r = i / DH, c = i % DH, t = t0 + r;
        s_gin[i] = t < a.S ? load_f(gout, ((static_cast<int64_t>(b) * a.S + t) * heads + head) * DH + c) : 0.f;
      }
      if constexpr (CONV) {
        stage_conv2<DH, K>((key ? a.p.conv2_k_w : a.p.conv2_q_w) + base * DH * K, s_w);
        conv1_rows<DH, K>(s_u, cg, lh, t0 - HL, TT + 3 * HL, w1, (key ? a.p.conv1_k_b : a.p.conv1_q_b) + base, s_a);
        __syncthreads();
      }
      premix_rows<DH, K, CONV>(s_u, s_a, s_w, CONV ? (key ? a.p.conv2_k_b : a.p.conv2_q_b) + base : nullptr, G, lh,
                               rows_y, 2 * HL, a.gamma, s_y);
      __syncthreads();
      // Norm forward and backward, RoPE backward: a row group of d_h/2 lanes per token, lane f
      // holding the RoPE pair (f, f + d_h/2); the parameter partials stay in registers until the
      // head's rows are done.
      const float scale = key ? scale_k : 1.f;
      const float* wn = key ? a.p.k_norm_w : a.p.q_norm_w;
      const int f = lane % HALF;
      const float wn1 = wn[f], wn2 = wn[f + HALF];
      float dn1 = 0.f, dn2 = 0.f, dtau = 0.f;
      for (int r0 = warp * kRowsPerWarp; r0 < rows_y; r0 += kWarps * kRowsPerWarp) {
        const int r = r0 + lane / HALF, t = t0 + r;
        const bool live = r < rows_y && t < a.S;  // beyond the sequence: no gradient
        float y1 = 0.f, y2 = 0.f, g1 = 0.f, g2 = 0.f, cs = 0.f, sn = 0.f;
        if (live) {
          y1 = s_y[r * DH + f], y2 = s_y[r * DH + f + HALF];
          g1 = s_gin[r * DH + f], g2 = s_gin[r * DH + f + HALF];
          cs = s_cos[r * HALF + f], sn = s_sin[r * HALF + f];
        }
        const float rs = rsqrtf(group_sum<HALF>(y1 * y1 + y2 * y2) / DH + a.eps);
        const float n1 = y1 * rs, n2 = y2 * rs;
        // RoPE is a rotation: its transpose rotates back.
        const float gx1 = g1 * cs + g2 * sn, gx2 = g2 * cs - g1 * sn;
        const float gn1 = gx1 * wn1 * scale, gn2 = gx2 * wn2 * scale;
        const float mean = group_sum<HALF>(gn1 * n1 + gn2 * n2) / DH;
        if (r < rows_y) {
          s_y[r * DH + f] = live ? rs * (gn1 - n1 * mean) : 0.f;
          s_y[r * DH + f + HALF] = live ? rs * (gn2 - n2 * mean) : 0.f;
        }
        if (live && r < TT) {  // parameters: this tile's own tokens only (the halo belongs to the next)
          dn1 += gx1 * n1 * scale;
          dn2 += gx2 * n2 * scale;
          dtau += (gx1 * n1 * wn1 + gx2 * n2 * wn2) * scale;
        }
      }
      dn1 = across_groups<HALF>(dn1);
      dn2 = across_groups<HALF>(dn2);
      if (lane < HALF) {
        float* dn = (key ? s_dkn : s_dqn) + warp * DH;
        dn[f] += dn1;
        dn[f + HALF] += dn2;
      }
      if (key) {
        dtau = warp_sum(dtau);
        if (lane == 0) s_dtau[warp] += dtau;
      }
      __syncthreads();
      if constexpr (CONV) {
        // conv2: weight and bias gradients over this tile's tokens, then the gradient of its
        // input (conv1's output) for tokens t0 .. t0 + TT + HL - 1.
        float* ws_w2 = ws + L.w2 + static_cast<int64_t>(lh) * DH * DH * K;
        // Weight and bias gradients: thread (c, c') walks the tile's rows with a window of K
        // values of a in registers (one load of a and NC of G per row, NC output channels a
        // thread where there are more of them than threads); the threads of c' = 0 also sum
        // the bias's gradient.
        constexpr int NC = DH * DH >= 2 * kThreads ? 2 : 1, CSTEP = DH / NC;
        for (int e = threadIdx.x; e < CSTEP * DH; e += kThreads) {
          const int c = e / DH, cp = e % DH;
          float acc[NC][K], win[K], bias[NC];
#pragma unroll
          for (int j = 0; j < K; ++j) {
            win[j] = j < K - 1 ? s_a[j * DH + cp] : 0.f;
#pragma unroll
            for (int n = 0; n < NC; ++n) acc[n][j] = 0.f;
          }
#pragma unroll
          for (int n = 0; n < NC; ++n) bias[n] = 0.f;
          for (int r = 0; r < TT; ++r) {
            win[K - 1] = s_a[(r + K - 1) * DH + cp];
#pragma unroll
            for (int n = 0; n < NC; ++n) {
              const float gv = s_y[r * DH + c + n * CSTEP];
              bias[n] += gv;
#pragma unroll
              for (int j = 0; j < K; ++j) acc[n][j] += gv * win[j];
            }
#pragma unroll
            for (int j = 0; j < K - 1; ++j) win[j] = win[j + 1];
          }
#pragma unroll
          for (int n = 0; n < NC; ++n) {
#pragma unroll
            for (int j = 0; j < K; ++j) ws_w2[((c + n * CSTEP) * DH + cp) * K + j] += acc[n][j];
            if (cp == 0) ws[L.b2 + lh * DH + c + n * CSTEP] += bias[n];
          }
        }
        // Input gradient of conv2 for rows [0, TT + HL): kRows to a thread, then the rest.
        const int tiles = (TT + HL) / kRows, singles = TT + HL - tiles * kRows;
        for (int task = threadIdx.x; task < (tiles + singles) * DH; task += kThreads) {
          const int cp = task % DH, q = task / DH;
          if (q < tiles) {
            float acc[kRows];
            conv2_input_grad_rows<DH, K, kRows>(s_y, s_w, q * kRows, cp, acc);
#pragma unroll
            for (int i = 0; i < kRows; ++i) s_da[(q * kRows + i) * DH + cp] = acc[i];
          } else {
            const int r = tiles * kRows + (q - tiles);
            float acc[1];
            conv2_input_grad_rows<DH, K, 1>(s_y, s_w, r, cp, acc);
            s_da[r * DH + cp] = acc[0];
          }
        }
        __syncthreads();
        // conv1: weight and bias gradients over this tile's tokens (task j = K is the bias),
        // the rows split RS ways so that every thread has a share; the partials go through
        // s_gin (free after the norm loop) and are added in split order.
        constexpr int J = K + 1, RS = kThreads / (DH * J) > 1 ? kThreads / (DH * J) : 1;
        float* s_part = s_gin;  // RS x DH x J
        for (int e = threadIdx.x; e < RS * DH * J; e += kThreads) {
          const int split = e / (DH * J), c = e % (DH * J) / J, j = e % J;
          const int rb = split * TT / RS, re = (split + 1) * TT / RS;
          float acc = 0.f;
          for (int r = rb; r < re; ++r) acc += s_da[r * DH + c] * (j < K ? s_u[(r + HL + j) * cg + lh * DH + c] : 1.f);
          s_part[e] = acc;
        }
        __syncthreads();
        for (int e = threadIdx.x; e < DH * J; e += kThreads) {
          float acc = 0.f;
          for (int split = 0; split < RS; ++split) acc += s_part[split * DH * J + e];
          const int c = e / J, j = e % J;
          if (j < K) ws[L.w1 + (lh * DH + c) * K + j] += acc;
          else ws[L.b1 + lh * DH + c] += acc;
        }
      }
      // Input gradient: through the convolutions, plus the qk-mean's direct paths.
      for (int i = threadIdx.x; i < TT * DH; i += kThreads) {
        const int r = i / DH, c = i % DH, t = t0 + r;
        const float gcur = s_y[i];
        float d = gcur;
        if constexpr (CONV) {
          d = 0.f;
#pragma unroll
          for (int j = 0; j < K; ++j) d += w1[c * K + j] * s_da[(r + HL - j) * DH + c];
        }
        if (key) {
          s_gk[i] = gcur;
          s_dk[i] = d + 0.5f * a.gamma * gcur;
        } else {
          s_gsum[i] += gcur;
          d += 0.5f * a.gamma * (gcur + s_gk[i] / static_cast<float>(G));
          if (t < a.S) store_f(a.dq0, ((static_cast<int64_t>(b) * a.S + t) * a.H + g * G + lh) * DH + c, d);
        }
      }
      __syncthreads();  // s_w, s_a, s_y, s_da are reused by the next head
    }
    for (int i = threadIdx.x; i < TT * DH; i += kThreads) {
      const int r = i / DH, c = i % DH, t = t0 + r;
      if (t < a.S) {
        store_f(a.dk0, ((static_cast<int64_t>(b) * a.S + t) * a.Hkv + g) * DH + c,
                s_dk[i] + 0.5f * a.gamma * s_gsum[i]);
      }
    }
  }
  __syncthreads();
  // Norm and temperature partials of this block, summed over warps in order.
  for (int c = threadIdx.x; c < DH; c += kThreads) {
    float q = 0.f, k = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      q += s_dqn[w * DH + c];
      k += s_dkn[w * DH + c];
    }
    ws[L.qn + c] = q;
    ws[L.kn + c] = k;
  }
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int w = 0; w < kWarps; ++w) t += s_dtau[w];
    ws[L.tau] = t;
  }
}

// Sums the P per-block slices of each group in order and scatters them to the parameter
// gradients; the norm weights are shared by all groups and are summed over groups too.
__global__ void reduce_param_grads(const float* ws, int P, int Hkv, int G, int dh, int K, bool conv, int64_t slice,
                                   CcqaPrologueParamGrads out) {
  const SliceLayout L = slice_layout(G, dh, K);
  const int64_t total = static_cast<int64_t>(Hkv) * L.size;
  const int64_t per_head = static_cast<int64_t>(dh) * dh * K;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int g = static_cast<int>(i / L.size);
    const int64_t e = i % L.size;
    if (e >= L.qn && e < L.tau) {
      if (g != 0) continue;
      float s = 0.f;
      for (int gg = 0; gg < Hkv; ++gg)
        for (int p = 0; p < P; ++p) s += ws[(static_cast<int64_t>(p) * Hkv + gg) * slice + e];
      if (e < L.kn) out.q_norm_w[e - L.qn] = s;
      else out.k_norm_w[e - L.kn] = s;
      continue;
    }
    if (!conv && e < L.qn) continue;
    float s = 0.f;
    for (int p = 0; p < P; ++p) s += ws[(static_cast<int64_t>(p) * Hkv + g) * slice + e];
    if (e == L.tau) {
      out.tau[g] = s;
    } else if (e < L.b1 || (e >= L.w2 && e < L.b2)) {  // weights
      const bool w1 = e < L.b1;
      const int64_t x = w1 ? e : e - L.w2;
      const int64_t per = w1 ? static_cast<int64_t>(dh) * K : per_head;  // floats per local head
      const int lh = static_cast<int>(x / per);
      const int64_t r = x % per;
      if (lh < G) (w1 ? out.conv1_q_w : out.conv2_q_w)[static_cast<int64_t>(g * G + lh) * per + r] = s;
      else (w1 ? out.conv1_k_w : out.conv2_k_w)[static_cast<int64_t>(g) * per + r] = s;
    } else {  // biases
      const bool b1 = e < L.w2;
      const int64_t ch = b1 ? e - L.b1 : e - L.b2;
      const int lh = static_cast<int>(ch / dh), c = static_cast<int>(ch % dh);
      if (lh < G) (b1 ? out.conv1_q_b : out.conv2_q_b)[static_cast<int64_t>(g * G + lh) * dh + c] = s;
      else (b1 ? out.conv1_k_b : out.conv2_k_b)[static_cast<int64_t>(g) * dh + c] = s;
    }
  }
}

// ---- host side ----

template <typename T, int DH, int K, bool CONV>
struct Cfg {
  using type = T;
  static constexpr int dh = DH;
  static constexpr int k = K;
  static constexpr bool conv = CONV;
};

template <typename T, int DH, typename F>
void by_kernel(const CcqaPrologueShape& s, F&& f) {
  if (!s.use_convs) return f(Cfg<T, DH, 1, false>{});
  switch (s.conv_kernel) {
    case 1: return f(Cfg<T, DH, 1, true>{});
    case 2: return f(Cfg<T, DH, 2, true>{});
    case 3: return f(Cfg<T, DH, 3, true>{});
    default: HYDRA_FAIL(common::RuntimeFailure, "ccqa prologue: unsupported conv kernel " << s.conv_kernel);
  }
}
template <typename T, typename F>
void by_head_dim(const CcqaPrologueShape& s, F&& f) {
  switch (s.head_dim) {
    case 16: return by_kernel<T, 16>(s, f);
    case 32: return by_kernel<T, 32>(s, f);
    default: HYDRA_FAIL(common::RuntimeFailure, "ccqa prologue: unsupported head size " << s.head_dim);
  }
}
template <typename F>
void dispatch(const CcqaPrologueShape& s, F&& f) {
  if (s.dtype == CcqaDtype::kFloat32) by_head_dim<float>(s, f);
  else by_head_dim<__nv_bfloat16>(s, f);
}

// The two device attributes the launch planning reads, queried once per device: a layer call
// plans five times (applies, forward, workspace size, backward), and these never change.
struct DeviceLimits {
  int smem_optin = 0, sms = 0;
};
constexpr int kMaxDevices = 64;

const DeviceLimits& device_limits() {
  int dev = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&dev));
  HYDRA_CHECK(dev >= 0 && dev < kMaxDevices, "ccqa prologue: device " << dev);
  static std::once_flag once[kMaxDevices];
  static DeviceLimits limits[kMaxDevices];
  std::call_once(once[dev], [dev] {
    HYDRA_KERNEL_CHECK(cudaDeviceGetAttribute(&limits[dev].smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    HYDRA_KERNEL_CHECK(cudaDeviceGetAttribute(&limits[dev].sms, cudaDevAttrMultiProcessorCount, dev));
  });
  return limits[dev];
}

int effective_kernel(const CcqaPrologueShape& s) { return s.use_convs ? s.conv_kernel : 1; }

// The forward's token tile: the largest of 64, 32, 16 (no larger than the sequence needs) whose
// shared memory leaves room for two blocks per SM, else the largest that fits at all; 0 if none
// does. (Its grid is one block a tile and group, so there are no rounds to balance.)
int forward_tile(const CcqaPrologueShape& s) {
  const int optin = device_limits().smem_optin;
  const int G = s.heads / s.kv_heads, K = effective_kernel(s);
  int cap = 16;
  while (cap < s.seq && cap < 64) cap *= 2;
  for (const int64_t limit : {static_cast<int64_t>(113 * 1024), static_cast<int64_t>(optin)}) {
    for (const int T : {64, 32, 16}) {
      if (T > cap) continue;
      if (fwd_smem_floats(T, s.head_dim, K, s.use_convs, G) * static_cast<int64_t>(sizeof(float)) <= limit) return T;
    }
  }
  return 0;
}

bool backward_tile_fits(const CcqaPrologueShape& s, int T) {
  const int64_t floats = bwd_smem_floats(T, s.head_dim, effective_kernel(s), s.use_convs, s.heads / s.kv_heads);
  return floats * static_cast<int64_t>(sizeof(float)) <= device_limits().smem_optin;
}

struct BackwardPlan {
  int T = 0, n_tiles = 0, P = 0;
  int64_t slice = 0;
  size_t workspace_bytes = 0;
};

// Backward blocks that fit on one multiprocessor at this tile (shared memory and registers),
// with the kernel's shared-memory limit raised to what it needs. Remembered per device, kernel
// variant and shared-memory size: the two driver calls are host time on every eager layer call
// (a layer plans twice a backward), and their answer never changes.
int backward_blocks_per_sm(const CcqaPrologueShape& s, int tile) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, size_t>, int> known;
  int dev = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&dev));
  int blocks = 0;
  dispatch(s, [&](auto cfg) {
    using C = decltype(cfg);
    const size_t bytes = bwd_smem_floats(tile, C::dh, C::k, C::conv, s.heads / s.kv_heads) * sizeof(float);
    auto kernel = prologue_backward_kernel<typename C::type, C::dh, C::k, C::conv>;
    const std::lock_guard<std::mutex> lock(mutex);
    const auto key = std::make_tuple(dev, reinterpret_cast<const void*>(kernel), bytes);
    if (const auto it = known.find(key); it != known.end()) {
      blocks = it->second;
      return;
    }
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    HYDRA_KERNEL_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, bytes));
    known[key] = blocks;
  });
  return std::max(blocks, 1);
}

// The persistent grid at tile T: its rounds (tiles a block takes, at most) and its blocks per
// group, as many as those rounds need and no more (every block then takes `rounds` tiles or one
// fewer, and there are fewer parameter-gradient slices to sum).
struct BackwardGrid {
  int64_t rounds = 0, blocks_per_group = 0;
};

BackwardGrid backward_grid(const CcqaPrologueShape& s, int T) {
  const int64_t work = s.batch * ((s.seq + T - 1) / T);
  const int64_t resident = static_cast<int64_t>(backward_blocks_per_sm(s, T)) * device_limits().sms;
  const int64_t P = std::max<int64_t>(1, std::min(work, (resident + s.kv_heads - 1) / s.kv_heads));
  BackwardGrid grid;
  grid.rounds = (work + P - 1) / P;
  grid.blocks_per_group = (work + grid.rounds - 1) / grid.rounds;
  return grid;
}

// The backward's time at tile T, in token rows of the busiest SM: its blocks x the rounds x a
// tile's rows (T, the halo of 2(K-1) the recomputed forward and the norm add, and a fixed part
// worth kTileFixedRows), divided by how well that many blocks use an SM. The SM's throughput,
// not a block's chain, is what binds from two blocks an SM on; one block alone is latency-bound.
// Calibrated on an H100 (docs/PERF.md, 2026-12-06, session 27: the backward timed at tiles
// 16..64 for d_h 16, 32 and 64, B 1..16, S 1024..16384): it picks the fastest timed tile at all
// seven shapes, where "the largest tile that leaves room for two blocks" lost up to 7% (S 8192,
// S 16384 and B 8 at d_h 32 want 28, not 32) and "the fewest rounds" lost 11% (S 4096).
constexpr int kTileFixedRows = 4;
constexpr double kSmUse[3] = {0.62, 0.92, 1.0};  // one, two, three or more blocks an SM

double backward_cost(const CcqaPrologueShape& s, int T) {
  const BackwardGrid grid = backward_grid(s, T);
  const int sms = device_limits().sms;
  const int64_t per_sm = (grid.blocks_per_group * s.kv_heads + sms - 1) / sms;
  const int rows = T + 2 * (effective_kernel(s) - 1) + kTileFixedRows;
  return static_cast<double>(per_sm * grid.rounds * rows) / kSmUse[std::min<int64_t>(per_sm, 3) - 1];
}

// The backward's token tile: the multiple of 4 in [16, 64] of least backward_cost (the larger
// tile on a tie) among those whose shared memory fits; backward_tile where set. Remembered per
// device and shape (a layer plans twice a backward).
int backward_tile(const CcqaPrologueShape& s) {
  if (s.backward_tile != 0) return backward_tile_fits(s, s.backward_tile) ? s.backward_tile : 0;
  static std::mutex mutex;
  static std::map<std::tuple<int, int64_t, int64_t, int, int, int, int, bool, CcqaDtype>, int> known;
  int dev = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(dev, s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, effective_kernel(s),
                                   s.use_convs, s.dtype);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = known.find(key); it != known.end()) return it->second;
  }
  const int64_t cap = std::min<int64_t>(64, std::max<int64_t>(16, (s.seq + 3) / 4 * 4));
  int best = 0;
  double best_cost = 0;
  for (int T = 16; T <= cap; T += 4) {
    if (!backward_tile_fits(s, T)) continue;
    const double cost = backward_cost(s, T);
    if (best == 0 || cost <= best_cost) best = T, best_cost = cost;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  known[key] = best;
  return best;
}

BackwardPlan backward_plan(const CcqaPrologueShape& s) {
  BackwardPlan plan;
  plan.T = backward_tile(s);
  HYDRA_CHECK(plan.T > 0, "ccqa prologue backward: no tile fits in shared memory");
  plan.n_tiles = static_cast<int>((s.seq + plan.T - 1) / plan.T);
  plan.P = static_cast<int>(backward_grid(s, plan.T).blocks_per_group);
  plan.slice = slice_layout(s.heads / s.kv_heads, s.head_dim, effective_kernel(s)).size;
  plan.workspace_bytes = static_cast<size_t>(plan.P) * s.kv_heads * plan.slice * sizeof(float);
  return plan;
}

template <typename T>
Args<T> make_args(const CcqaPrologueShape& s, int tile, const void* q0, const void* k0, const int64_t* positions,
                  const CcqaPrologueParams& params) {
  Args<T> a{};
  a.B = static_cast<int>(s.batch);
  a.S = static_cast<int>(s.seq);
  a.H = s.heads;
  a.Hkv = s.kv_heads;
  a.G = s.heads / s.kv_heads;
  a.T_tile = tile;
  a.n_tiles = static_cast<int>((s.seq + tile - 1) / tile);
  a.gamma = s.qk_gain;
  a.eps = s.eps;
  for (int i = 0; i < s.head_dim / 2; ++i) a.inv_freq[i] = std::pow(s.rope_theta, -2.0 * i / s.head_dim);
  a.q0 = static_cast<const T*>(q0);
  a.k0 = static_cast<const T*>(k0);
  a.positions = positions;
  a.p = params;
  return a;
}

int elementwise_blocks(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }

}  // namespace

bool ccqa_prologue_supports(const CcqaPrologueShape& s) {
  if (s.batch <= 0 || s.seq <= 0 || s.seq > (1LL << 30) || s.heads <= 0 || s.kv_heads <= 0) return false;
  if (s.heads % s.kv_heads != 0 || s.kv_heads > 65535) return false;
  if (s.head_dim != 16 && s.head_dim != 32) return false;
  if (s.use_convs && (s.conv_kernel < 1 || s.conv_kernel > 3)) return false;
  if (s.backward_tile != 0 && (s.backward_tile < 16 || s.backward_tile > 64)) return false;
  if (forward_tile(s) == 0 || backward_tile(s) == 0) return false;
  return s.batch * ((s.seq + 15) / 16) < (1LL << 31);
}

void ccqa_prologue_forward(const CcqaPrologueShape& s, const void* q0, const void* k0, const int64_t* positions,
                           const CcqaPrologueParams& params, void* q, void* k, cudaStream_t stream) {
  HYDRA_CHECK(ccqa_prologue_supports(s), "ccqa prologue: unsupported shape");
  const int tile = forward_tile(s);
  dispatch(s, [&](auto cfg) {
    using C = decltype(cfg);
    using T = typename C::type;
    Args<T> a = make_args<T>(s, tile, q0, k0, positions, params);
    a.q = static_cast<T*>(q);
    a.k = static_cast<T*>(k);
    const size_t bytes = fwd_smem_floats(tile, C::dh, C::k, C::conv, a.G) * sizeof(float);
    auto kernel = prologue_forward_kernel<T, C::dh, C::k, C::conv>;
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    kernel<<<dim3(a.B * a.n_tiles, a.Hkv), kThreads, bytes, stream>>>(a);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
}

int ccqa_prologue_backward_tile(const CcqaPrologueShape& s) {
  HYDRA_CHECK(ccqa_prologue_supports(s), "ccqa prologue: unsupported shape");
  return backward_plan(s).T;
}

size_t ccqa_prologue_backward_workspace(const CcqaPrologueShape& s) {
  HYDRA_CHECK(ccqa_prologue_supports(s), "ccqa prologue: unsupported shape");
  return backward_plan(s).workspace_bytes;
}

void ccqa_prologue_backward(const CcqaPrologueShape& s, const void* q0, const void* k0, const int64_t* positions,
                            const CcqaPrologueParams& params, const void* dq, const void* dk, void* dq0, void* dk0,
                            const CcqaPrologueParamGrads& grads, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  HYDRA_CHECK(ccqa_prologue_supports(s), "ccqa prologue: unsupported shape");
  const BackwardPlan plan = backward_plan(s);
  HYDRA_CHECK(workspace_bytes >= plan.workspace_bytes,
              "ccqa prologue: workspace of " << workspace_bytes << " bytes, need " << plan.workspace_bytes);
  const int G = s.heads / s.kv_heads;
  dispatch(s, [&](auto cfg) {
    using C = decltype(cfg);
    using T = typename C::type;
    Args<T> a = make_args<T>(s, plan.T, q0, k0, positions, params);
    a.dq = static_cast<const T*>(dq);
    a.dk = static_cast<const T*>(dk);
    a.dq0 = static_cast<T*>(dq0);
    a.dk0 = static_cast<T*>(dk0);
    a.ws = static_cast<float*>(workspace);
    a.slice = plan.slice;
    const size_t bytes = bwd_smem_floats(plan.T, C::dh, C::k, C::conv, G) * sizeof(float);
    auto kernel = prologue_backward_kernel<T, C::dh, C::k, C::conv>;
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    kernel<<<dim3(plan.P, a.Hkv), kThreads, bytes, stream>>>(a);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
  const int64_t total = static_cast<int64_t>(s.kv_heads) * plan.slice;
  reduce_param_grads<<<elementwise_blocks(total), 256, 0, stream>>>(static_cast<const float*>(workspace), plan.P,
                                                                    s.kv_heads, G, s.head_dim, effective_kernel(s),
                                                                    s.use_convs, plan.slice, grads);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace hydra::kernels
