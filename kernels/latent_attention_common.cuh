// Private to kernels/: the mma.sync building blocks shared by the latent attention forward
// (latent_attention.cu) and backward (latent_attention_backward.cu), and their host-side
// argument checks. Included by those .cu files (and by decode_attention.cu for the PTX
// wrappers) only; the design invariants are stated at the top of latent_attention.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common/errors.h"
#include "kernels/cuda_check.cuh"
#include "kernels/exp2_poly.h"
#include "kernels/latent_attention.h"


namespace hydra::kernels::detail {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // queries and keys per tile
// A block has 64 / (16 MT) warps, each owning MT m-tiles of 16 rows (MT = 1 or 2).
__host__ __device__ constexpr int threads_for(int mt) { return 32 * kTile / (16 * mt); }
constexpr int kPad = 8;  // bf16 elements of padding per shared-memory row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// Small PTX wrappers.

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; valid == false writes 16 zero bytes instead.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
// All but the most recently committed group complete.
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::); }

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// d += a b for one m16n8k16 tile: a 16x16 (row), b 16x8 (col), d 16x8 fp32.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float exp2_approx(float x) {  // exp2(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---------------------------------------------------------------------------------------------
// Fragment helpers. Lane l = 4 g + t. An m16n8 accumulator holds rows g and g + 8, columns 2t
// and 2t + 1. A 16-row slab stored [row][col] in shared memory gives:
//   a_frag:  the A operand (rows x k) of an mma, k-chunk kc (16 columns);
//   b_pair:  B operands for two n-blocks of 8 rows (B[k][n] = M[n][k]), k-chunk kc;
//   bt_pair: B operands for two n-blocks of 8 columns (B[k][n] = M[k][n]), rows k0..k0+15.

template <int W>
__device__ __forceinline__ void a_frag(uint32_t (&r)[4], const bf16 (*m)[W], int row0, int col0, int lane) {
  ldsm_x4(r, &m[row0 + ((lane >> 3) & 1) * 8 + (lane & 7)][col0 + (lane >> 4) * 8]);
}
template <int W>
__device__ __forceinline__ void b_pair(uint32_t (&r)[4], const bf16 (*m)[W], int row0, int col0, int lane) {
  ldsm_x4(r, &m[row0 + (lane >> 4) * 8 + (lane & 7)][col0 + ((lane >> 3) & 1) * 8]);
}
template <int W>
__device__ __forceinline__ void bt_pair(uint32_t (&r)[4], const bf16 (*m)[W], int row0, int col0, int lane) {
  ldsm_x4_t(r, &m[row0 + ((lane >> 3) & 1) * 8 + (lane & 7)][col0 + (lane >> 4) * 8]);
}
// The A operand (rows x k) read transposed from a matrix stored [k][row].
template <int W>
__device__ __forceinline__ void at_frag(uint32_t (&r)[4], const bf16 (*m)[W], int k0, int row0, int lane) {
  ldsm_x4_t(r, &m[k0 + (lane >> 4) * 8 + (lane & 7)][row0 + ((lane >> 3) & 1) * 8]);
}

// MT m-tiles of N n-block accumulators (mma.sync's m16n8 C fragments) set to zero.
template <int MT, int N>
__device__ __forceinline__ void zero_fragments(float (&x)[MT][N][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < N; ++i) x[mt][i][0] = x[mt][i][1] = x[mt][i][2] = x[mt][i][3] = 0.f;
  }
}

// Accumulators of 8 n-blocks (64 columns) as the A operand of k-chunk kk (columns 16 kk ..).
__device__ __forceinline__ void acc_as_a(uint32_t (&a)[4], const float (&s)[8][4], int kk) {
  a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// Rows row0 .. row0 + 63 of a [S, D] slab (row stride in elements) into shared memory,
// asynchronously; rows at or past seq are zero-filled. shift (CCQA's value shift): the second
// half of row r's channels comes from row r - 1 of the slab, zero for row 0. at(r, c): where
// the 16 bytes of row r from channel c go (the tile's layout). Called for every key or query
// tile, so the addresses are one 64-bit offset stepped by a constant and two 32-bit compares a
// piece (ncu, session 28: a per-piece address computation had cost the forward about 115
// instructions a tile, a quarter of its instructions; this form about 30). The block's first kT
// threads load the tile.
template <int D, int kT, typename At>
__device__ __forceinline__ void load_rows(At at, const bf16* src, int64_t row_stride, int row0, int seq, bool shift) {
  constexpr int kChunks = D / 8, kRowStep = kT / kChunks;  // 16-byte pieces per row; a thread's row step
  static_assert(kTile * kChunks % kT == 0, "every thread moves the same number of pieces");
  static_assert(kT % kChunks == 0, "a thread keeps one column: piece threadIdx.x % kChunks of its rows");
  static_assert(D % 16 == 0, "the shift moves whole 16-byte pieces");
  // Piece c = threadIdx.x + i kT is row c / kChunks, column c % kChunks: the column is the
  // thread's own for every i, so its shift is worked out once.
  const int tid = static_cast<int>(threadIdx.x);
  const int col = (tid % kChunks) * 8, first = tid / kChunks;
  const int from0 = row0 + first - (shift && col >= D / 2 ? 1 : 0);  // source row of the first piece
  int64_t off = static_cast<int64_t>(from0) * row_stride + col;
  const int64_t step = static_cast<int64_t>(kRowStep) * row_stride;
#pragma unroll
  for (int i = 0; i < kTile * kChunks / kT; ++i, off += step) {
    const int r = first + i * kRowStep;
    const bool valid = row0 + r < seq && from0 + i * kRowStep >= 0;
    cp_async16(at(r, col), src + (valid ? off : 0), valid);
  }
}

// load_rows into a padded [64][D + kPad] tile (the mma.sync kernels' layout).
template <int D, int kT>
__device__ __forceinline__ void load_tile(bf16 (*dst)[D + kPad], const bf16* src, int64_t row_stride, int row0,
                                          int seq, bool shift = false) {
  load_rows<D, kT>([dst](int r, int c) { return &dst[r][c]; }, src, row_stride, row0, seq, shift);
}

// The forward's block: query tile qt of head h of sequence b (KV head hk). One-dimensional grid,
// the longest tiles first across the whole grid (query tile qt does qt + 1 key tiles): blocks
// start in index order, so a long block should not be among the last to start. Ordered only
// within each (head, batch), as a 3-d grid did, the last (head, batch) started its longest tile
// near the end and ran alone. tiles_inner: that older order.
struct ForwardBlock {
  int qt, h, b, hk;
};
__device__ __forceinline__ ForwardBlock forward_block(int seq, int heads, int group, bool tiles_inner) {
  const int n_tiles = (seq + kTile - 1) / kTile, per_tile = static_cast<int>(gridDim.x) / n_tiles;
  const int id = static_cast<int>(blockIdx.x);
  ForwardBlock f;
  f.qt = n_tiles - 1 - (tiles_inner ? id % n_tiles : id / per_tile);
  const int rest = tiles_inner ? id / n_tiles : id % per_tile;
  f.h = rest % heads;
  f.b = rest / heads;
  f.hk = f.h / group;
  return f;
}

struct Strides {
  int64_t b, s, h;
};

// The forward's arguments (latent_attention.cu's mma.sync kernel, latent_attention_wgmma.cu's).
struct FwdParams {
  const bf16 *q, *k, *v;
  bf16* out;
  float* lse;
  Strides qs, ks, vs, os;
  int seq, heads, group;
  float scale_log2;  // scale * log2 e
  bool tiles_inner;  // LatentAttentionVariant::tiles_inner
  bool value_shift;  // LatentAttentionShape::value_shift
};

struct BwdParams {
  const bf16 *q, *k, *v, *dout;
  const float *lse, *delta;  // [B, H, S]
  float* dq_acc;             // [B, S, H, D] fp32, zeroed
  bf16 *dk, *dv;
  // Head split (slices > 1): each block's raw dk (unscaled) and dv (of the shifted values it
  // read) go to fp32 [slices, B, S, H_kv, D] partials, which kv_sum_kernel finishes.
  int slices;
  float *dk_part, *dv_part;
  Strides qs, ks, vs, dos, dks, dvs;
  int batch_size, seq, heads, group;
  float scale, scale_log2;
  bool tiles_inner;  // LatentAttentionVariant::tiles_inner
  bool value_shift;  // LatentAttentionShape::value_shift
};

// The backward's block: key tile kt of KV head hk of sequence b, and the slice of that head's
// query heads it walks (h_first and on, slice_heads of them) over per_head query tiles each:
// `total` steps. One-dimensional grid, key tile 0 (the most query tiles) first across the whole
// grid, as in the forward: a 3-d grid ordered the tiles only within each (KV head, batch), so the
// last ones to start included a longest tile (1.45 waves on small, ncu).
struct BackwardBlock {
  int kt, slice, hk, b, kv_heads, h_first, per_head, total;
};
__device__ __forceinline__ BackwardBlock backward_block(const BwdParams& p) {
  const int n_kt = (p.seq + kTile - 1) / kTile, per_tile = static_cast<int>(gridDim.x) / n_kt;
  const int id = static_cast<int>(blockIdx.x);
  BackwardBlock f;
  f.kt = p.tiles_inner ? id % n_kt : id / per_tile;
  const int rest = p.tiles_inner ? id / n_kt : id % per_tile;
  f.kv_heads = p.heads / p.group;
  f.slice = rest % p.slices;
  f.hk = (rest / p.slices) % f.kv_heads;
  f.b = rest / p.slices / f.kv_heads;
  const int slice_heads = p.group / p.slices;
  f.h_first = f.hk * p.group + f.slice * slice_heads;
  f.per_head = n_kt - f.kt;  // query tiles kt .. n_kt - 1
  f.total = f.per_head * slice_heads;
  return f;
}

// One key tile of the forward's online softmax, in two halves, for MT m-tiles of 16 query rows
// (m16n8 layout) with s the raw q k^T of 64 keys. running_max: the running max m (raw scores)
// takes the tile's, the running sums l (this thread's part of each row) are rescaled to it, alpha
// receives each row's rescale factor (the output owes it: rescale_rows) and neg = -m c.
// exponentiate: s becomes exp2(s c - m c) (c = scale log2 e > 0: one FFMA and one ex2 a score)
// and l takes the tile's probabilities. Where masked, a row's keys past lim (its position minus
// the tile's first key) are left out; only tiles that cross some row's position are masked, and
// every row sees key 0 in tile 0, so m is finite from the first tile on. Masking is a template
// argument: as a run-time flag its compares and selects ran on every tile (ncu: a sixth of the
// forward's instructions).
template <int MT, bool kMasked>
__device__ __forceinline__ void running_max(float (&s)[MT][8][4], float (&m)[MT][2], float (&l)[MT][2],
                                            float (&alpha)[MT][2], float (&neg)[MT][2], float c,
                                            const int (&lim)[MT][2], int lane) {
  const int t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = nb * 8 + 2 * t + (e & 1);
        if (kMasked && key > lim[mt][e >> 1]) s[mt][nb][e] = -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][nb][e]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[mt][r], mx[r]);
      alpha[mt][r] = exp2_approx((m[mt][r] - m_new) * c);
      m[mt][r] = m_new;
      neg[mt][r] = -m_new * c;
      l[mt][r] *= alpha[mt][r];
    }
  }
}
// kPoly of the 8 n-blocks (8 keys each) take their exponentials from exp2_poly (exp2_poly.h), the
// rest from the special-function unit.
template <int MT, int kPoly = 0>
__device__ __forceinline__ void exponentiate(float (&s)[MT][8][4], float (&l)[MT][2], const float (&neg)[MT][2],
                                             float c) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = fmaf(s[mt][nb][e], c, neg[mt][e >> 1]);
        s[mt][nb][e] = nb < kPoly ? exp2_poly(x) : exp2_approx(x);
        l[mt][e >> 1] += s[mt][nb][e];
      }
    }
  }
}

// The output rows times their rescale factors (running_max's alpha).
template <int D, int MT>
__device__ __forceinline__ void rescale_rows(float (&o)[MT][D / 8][4], const float (&alpha)[MT][2]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[mt][i][0] *= alpha[mt][0], o[mt][i][1] *= alpha[mt][0];
      o[mt][i][2] *= alpha[mt][1], o[mt][i][3] *= alpha[mt][1];
    }
  }
}

// The whole step where the output can be rescaled at once (the mma.sync forward): s becomes the
// tile's probabilities, m, l and o move to the new max.
template <int D, int MT, bool kMasked, int kPoly = 0>
__device__ __forceinline__ void online_softmax(float (&s)[MT][8][4], float (&o)[MT][D / 8][4], float (&m)[MT][2],
                                               float (&l)[MT][2], float c, const int (&lim)[MT][2], int lane) {
  float alpha[MT][2], neg[MT][2];
  running_max<MT, kMasked>(s, m, l, alpha, neg, c, lim, lane);
  rescale_rows<D, MT>(o, alpha);
  exponentiate<MT, kPoly>(s, l, neg, c);
}

// The forward's end for MT m-tiles of 16 queries from row_base of query tile qt: each row's sum
// (this thread's part of l, summed over the quad), out = o / sum, and lse (natural log).
template <int D, int MT>
__device__ __forceinline__ void write_rows_out(const FwdParams& p, const float (&o)[MT][D / 8][4],
                                               const float (&m)[MT][2], const float (&l)[MT][2], int qt, int h, int b,
                                               int row_base, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = l[mt][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = qt * kTile + row_base + 16 * mt + g + r * 8;
      if (row >= p.seq) continue;
      const float inv = 1.f / sum;
      bf16* out = p.out + b * p.os.b + row * p.os.s + h * p.os.h;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *reinterpret_cast<__nv_bfloat162*>(out + i * 8 + 2 * t) =
            __floats2bfloat162_rn(o[mt][i][2 * r] * inv, o[mt][i][2 * r + 1] * inv);
      }
      if (t == 0) {
        p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.seq + row] = (m[mt][r] * p.scale_log2 + log2f(sum)) * kLn2;
      }
    }
  }
}

// The positions of this thread's query rows (MT m-tiles of 16 from row_base of query tile qt,
// rows g and g + 8).
template <int MT>
__device__ __forceinline__ void row_positions(int (&pos)[MT][2], int qt, int row_base, int lane) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) pos[mt][r] = qt * kTile + row_base + 16 * mt + lane / 4 + 8 * r;
  }
}

// The causal limits of key tile j for those rows (online_softmax's lim).
template <int MT>
__device__ __forceinline__ void tile_limits(int (&lim)[MT][2], const int (&pos)[MT][2], int j) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) lim[mt][0] = pos[mt][0] - j * kTile, lim[mt][1] = pos[mt][1] - j * kTile;
}

// dq of query tile qt, head h (MT m-tiles of 16 queries from row_base) added to the fp32
// workspace by atomics: the sum over key tiles.
template <int D, int MT>
__device__ __forceinline__ void add_query_gradients(const BwdParams& p, const float (&dq)[MT][D / 8][4], int qt,
                                                    int h, int b, int row_base, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = qt * kTile + row_base + 16 * mt + g + r * 8;
      if (row >= p.seq) continue;
      float* dst = p.dq_acc + ((static_cast<int64_t>(b) * p.seq + row) * p.heads + h) * D;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        atomicAdd(reinterpret_cast<float2*>(dst + i * 8 + 2 * t), make_float2(dq[mt][i][2 * r], dq[mt][i][2 * r + 1]));
      }
    }
  }
}

// In place: s (k q^T, raw) becomes p = exp2(s scale log2 e - lse2) with the causal mask, and dp
// (v dout^T) becomes ds = p (dp - delta), for MT m-tiles of 16 keys from row_base against the
// step's 64 queries (lse2, delta: the queries' values). Only the diagonal tile is masked (a
// run-time flag: a second copy of the step for it, or a compare against the tiles' distance,
// cost the mma.sync backward registers or spills). The flag's compare and select run on every
// step (ncu: 86 of a step's 897 instructions at d 32, MT 2); moving the mask into the diagonal
// step's accumulators (-inf before k q^T, no test elsewhere) measured no faster at S 1k-16k
// (H100, docs/PERF.md, 2026-12-06, session 30): the backward is not bound by its issue rate.
template <int MT>
__device__ __forceinline__ void score_gradients(float (&s)[MT][8][4], float (&dp)[MT][8][4], const float* lse2,
                                                const float* delta, float scale_log2, bool diag, int row_base,
                                                int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
    for (int cc = 0; cc < 2; ++cc) {
      const int query = nb * 8 + 2 * t + cc;
      const float l2 = lse2[query], dl = delta[query];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int e = 2 * r + cc, key = row_base + 16 * mt + g + 8 * r;
          float pr = exp2_approx(fmaf(s[mt][nb][e], scale_log2, -l2));
          if (diag && key > query) pr = 0.f;
          s[mt][nb][e] = pr;
          dp[mt][nb][e] = pr * (dp[mt][nb][e] - dl);
        }
      }
    }
  }
}

// The end of a backward block: its keys' dk and dv from the accumulators (MT m-tiles of 16 keys
// from row_base, the m16n8 layout: n-block i of 8 channels, rows g and g + 8). Under a head split,
// this slice's fp32 partials as accumulated (kv_sum_kernel finishes them).
template <int D, int MT>
__device__ __forceinline__ void write_key_gradients(const BwdParams& p, const BackwardBlock& blk, int row_base,
                                                    int lane, const float (&dk)[MT][D / 8][4],
                                                    const float (&dv)[MT][D / 8][4]) {
  const int g = lane / 4, t = lane % 4, k0 = blk.kt * kTile, b = blk.b, hk = blk.hk, slice = blk.slice,
            kv_heads = blk.kv_heads;
  if (p.slices > 1) {  // this slice's partials, as accumulated: kv_sum_kernel finishes them
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = k0 + row_base + 16 * mt + g + r * 8;
        if (row >= p.seq) continue;
        const int64_t at =
            (((static_cast<int64_t>(slice) * p.batch_size + b) * p.seq + row) * kv_heads + hk) * D + 2 * t;
        float2* dkp = reinterpret_cast<float2*>(p.dk_part + at);
        float2* dvp = reinterpret_cast<float2*>(p.dv_part + at);
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          dkp[4 * i] = make_float2(dk[mt][i][2 * r], dk[mt][i][2 * r + 1]);
          dvp[4 * i] = make_float2(dv[mt][i][2 * r], dv[mt][i][2 * r + 1]);
        }
      }
    }
    return;
  }

  // dk (times scale) and dv, each key row written once. With the value shift, the second half
  // of key row j's dv is the gradient of row j - 1's unshifted values (dropped at j = 0), and
  // the last row's second half, which no later row reads, gets 0: every element of the
  // unshifted dv is still written exactly once.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = k0 + row_base + 16 * mt + g + r * 8;
      if (row >= p.seq) continue;
      bf16* dkp = p.dk + b * p.dks.b + row * p.dks.s + hk * p.dks.h;
      bf16* dvp = p.dv + b * p.dvs.b + row * p.dvs.s + hk * p.dvs.h;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *reinterpret_cast<__nv_bfloat162*>(dkp + i * 8 + 2 * t) =
            __floats2bfloat162_rn(dk[mt][i][2 * r] * p.scale, dk[mt][i][2 * r + 1] * p.scale);
        const __nv_bfloat162 value = __floats2bfloat162_rn(dv[mt][i][2 * r], dv[mt][i][2 * r + 1]);
        if (!p.value_shift || i * 8 < D / 2) {
          *reinterpret_cast<__nv_bfloat162*>(dvp + i * 8 + 2 * t) = value;
          continue;
        }
        if (row > 0) *reinterpret_cast<__nv_bfloat162*>(dvp - p.dvs.s + i * 8 + 2 * t) = value;
        if (row == p.seq - 1) *reinterpret_cast<__nv_bfloat162*>(dvp + i * 8 + 2 * t) = __floats2bfloat162_rn(0.f, 0.f);
      }
    }
  }
}

// The forward and the backward on warpgroup MMAs (latent_attention_wgmma.cu;
// LatentAttentionVariant::wgmma_forward, wgmma_backward). backward_wgmma launches backward_kernel's
// grid (`blocks`) in its place; the caller does the rest of the backward as for that kernel.
void forward_wgmma(const LatentAttentionShape& shape, const FwdParams& p, cudaStream_t stream);
void backward_wgmma(const LatentAttentionShape& shape, const BwdParams& p, int64_t blocks, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Host-side argument checks.

inline Strides strides_of(const BshdConst& x) { return {x.batch_stride, x.seq_stride, x.head_stride}; }
inline Strides strides_of(const BshdMut& x) { return {x.batch_stride, x.seq_stride, x.head_stride}; }

inline void check_view(const void* data, Strides s, const char* name) {
  HYDRA_CHECK(data != nullptr, name << " is null");
  HYDRA_CHECK(latent_attention_aligned(data), name << " is not 16-byte aligned");
  HYDRA_CHECK(latent_attention_strides_ok(s.b, s.s, s.h),
              name << " strides (" << s.b << ", " << s.s << ", " << s.h << ") are not multiples of 8 elements");
}

inline void check_shape(const LatentAttentionShape& x) {
  HYDRA_CHECK(x.batch > 0 && x.seq > 0 && x.heads > 0 && x.kv_heads > 0, "empty latent attention shape");
  HYDRA_CHECK(x.heads % x.kv_heads == 0, "heads " << x.heads << " not a multiple of kv_heads " << x.kv_heads);
  HYDRA_CHECK(latent_attention_supports(x.head_dim), "latent attention: head size " << x.head_dim
                                                                                      << " (supported: 16, 32, 64)");
}

inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// The forward's grid (every forward kernel): one block a (query tile, head, batch).
inline unsigned forward_grid(const LatentAttentionShape& x) {
  const int64_t blocks = static_cast<int64_t>((x.seq + kTile - 1) / kTile) * x.heads * x.batch;
  HYDRA_CHECK(blocks < (int64_t{1} << 31), "latent attention forward: grid of " << blocks << " blocks");
  return static_cast<unsigned>(blocks);
}

}  // namespace hydra::kernels::detail
