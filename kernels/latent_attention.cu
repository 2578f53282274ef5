// Latent flash attention: causal GQA attention at the latent head sizes of CCQA (d_h = 16, 32,
// 64), forward and backward, on sm_90 tensor cores through mma.sync (m16n8k16, bf16 -> fp32).
//
// Design invariants
// - Layout [B, S, heads, D] for q, k, v, out and all gradients; D contiguous, other strides
//   multiples of 8 elements, base pointers 16-byte aligned (tiles move as 16-byte cp.async).
//   Query head h reads key/value head h / G, G = H / H_kv.
// - bf16 storage; fp32 accumulation in the tensor cores and in the softmax. Scores live in the
//   log2 domain (scale * log2 e folded into one multiply) so that each exp is one ex2.approx.
// - Tiles of 64 queries x 64 keys; each warp owns MT m-tiles of 16 rows (forward: queries;
//   backward: keys), so a block has 4 / MT warps. Equal tile sizes make the causal diagonal
//   exactly one tile, the only one that is masked.
// - Shared rows are padded by 8 elements (16 bytes): ldmatrix rows then fall in distinct banks.
// - Rows past S are zero-filled on load, never left as garbage (0 * NaN would leak into valid
//   rows); in the backward, query rows past S get lse = +inf so that their P is exactly 0.
// - The forward saves lse [B, H, S] (fp32, natural log), the only extra state of the backward.
// - Backward in FlashAttention-2 order: a block owns one key tile of one KV head and walks the
//   G query heads of its group and every query tile at or after the diagonal, so dk and dv are
//   summed over the group in registers and written once, without atomics; dq is summed over
//   key tiles with fp32 atomic adds into a workspace and converted (times scale) at the end.
//   Where that grid is too small for the GPU (one long sequence: key tile 0's chain of S / 64
//   query tiles times G heads outlasts the rest), the group is split into slices, one block a
//   slice, each writing fp32 dk, dv partials that a second pass adds in a fixed order.
// - CCQA's value shift (LatentAttentionShape::value_shift) is applied where V tiles are loaded:
//   a thread's 16-byte pieces of a row's second half come from the row before (zero at row 0);
//   the backward writes dv of the unshifted values (row j's second half to row j - 1, the last
//   row's second half 0). No pass of its own over v or dv.
// - Launchers take an explicit stream, never synchronise, and check every launch.
//
// This file: the forward kernel and the shared entry points; the backward lives in
// latent_attention_backward.cu, the mma.sync building blocks in latent_attention_common.cuh.
#include "kernels/latent_attention.h"

#include "kernels/latent_attention_common.cuh"

namespace hydra::kernels {
namespace {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Forward: one block per (query tile, head, batch); each warp owns MT m-tiles of 16 queries, so
// that every K and V fragment read from shared memory feeds MT tensor-core products. (Blocks of
// 128 queries, two tiles sharing each key and value tile, halve the L2 reads a score but ran 7-20%
// slower at S >= 8192 on an H100: two blocks of 256 threads an SM hide less latency than four or
// five of 128; docs/PERF.md, 2026-12-06, session 29. Issuing tile j + 1's q k^T before tile j's
// softmax, over three key/value stages, with or without FlashAttention-4's conditional rescale,
// tied at S 4096 and ran 4-20% slower at 8192-16384: 128 registers and 25% occupancy against
// the default's 96 and 31%; session 30.)

// Raw scores q k^T of MT m-tiles of 16 queries (their fragments qf) against a 64-key tile.
template <int D, int MT>
__device__ __forceinline__ void raw_scores(float (&s)[MT][8][4], const uint32_t (&qf)[MT][D / 16][4],
                                           const bf16 (*sk)[D + kPad], int lane) {
  constexpr int W = D + kPad;
  zero_fragments(s);
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t bb[4];
      b_pair<W>(bb, sk, np * 16, kc * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(s[mt][2 * np], qf[mt][kc], bb[0], bb[1]);
        mma(s[mt][2 * np + 1], qf[mt][kc], bb[2], bb[3]);
      }
    }
  }
}

// o += p v for the tile's probabilities s (as bf16 A fragments) and its 64 value rows.
template <int D, int MT>
__device__ __forceinline__ void add_probs_times_values(float (&o)[MT][D / 8][4], const float (&s)[MT][8][4],
                                                       const bf16 (*sv)[D + kPad], int lane) {
  constexpr int W = D + kPad;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc_as_a(a[mt], s[mt], kk);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t bb[4];
      bt_pair<W>(bb, sv, kk * 16, np * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(o[mt][2 * np], a[mt], bb[0], bb[1]);
        mma(o[mt][2 * np + 1], a[mt], bb[2], bb[3]);
      }
    }
  }
}

template <int D, int MT, int kMinBlocks, int kPoly>
__global__ void __launch_bounds__(threads_for(MT), kMinBlocks) forward_kernel(const FwdParams p) {
  constexpr int W = D + kPad, kT = threads_for(MT);
  __shared__ __align__(16) bf16 sq[kTile][W];
  __shared__ __align__(16) bf16 sk[2][kTile][W];
  __shared__ __align__(16) bf16 sv[2][kTile][W];

  const auto [qt, h, b, hk] = forward_block(p.seq, p.heads, p.group, p.tiles_inner);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bf16* q = p.q + b * p.qs.b + h * p.qs.h;
  const bf16* k = p.k + b * p.ks.b + hk * p.ks.h;
  const bf16* v = p.v + b * p.vs.b + hk * p.vs.h;
  const int row_base = warp * 16 * MT;  // m-tile mt holds rows row_base + 16 mt + g (+ 8)
  int pos[MT][2];
  row_positions<MT>(pos, qt, row_base, lane);

  const auto load_keys_values = [&](int stage, int tile) {
    load_tile<D, kT>(sk[stage], k, p.ks.s, tile * kTile, p.seq);
    load_tile<D, kT>(sv[stage], v, p.vs.s, tile * kTile, p.seq, p.value_shift);
  };
  load_tile<D, kT>(sq, q, p.qs.s, qt * kTile, p.seq);
  load_keys_values(0, 0);
  cp_async_commit();

  uint32_t qf[MT][D / 16][4];
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];  // running max (raw scores) and this thread's part of the row sum
  zero_fragments(o);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }

  for (int j = 0; j <= qt; ++j) {
    const int st = j & 1;
    cp_async_wait_all();
    __syncthreads();  // tile j visible; everyone is done with stage st ^ 1
    if (j < qt) load_keys_values(st ^ 1, j + 1);
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) a_frag<W>(qf[mt][kc], sq, row_base + 16 * mt, kc * 16, lane);
      }
    }

    float s[MT][8][4];
    raw_scores<D, MT>(s, qf, sk[st], lane);

    int lim[MT][2];
    tile_limits<MT>(lim, pos, j);
    // Tiles below the diagonal skip the mask's compares and selects. At D 64 the second copy of
    // the softmax cost registers (139 against 128: a block less an SM), and the masked copy is
    // right for every tile (lim >= 64 below the diagonal).
    if (D < 64 && j < qt) {
      online_softmax<D, MT, false, kPoly>(s, o, m, l, p.scale_log2, lim, lane);
    } else {
      online_softmax<D, MT, true, kPoly>(s, o, m, l, p.scale_log2, lim, lane);
    }

    add_probs_times_values<D, MT>(o, s, sv[st], lane);
  }

  write_rows_out<D, MT>(p, o, m, l, qt, h, b, row_base, lane);
}

// m-tiles per warp. 2 is built only where ptxas -v reports no spills (not at D = 64). The
// default is 1: on an H100 it was faster at all 12 benchmark shapes in the forward and at 10
// of 12 in the backward (docs/PERF.md, 2026-11-23): fewer registers, more warps in flight,
// which these latency-bound kernels need more than the halved shared-memory reads of 2.
int fwd_mtiles(int D, int asked) { return D == 64 ? 1 : asked ? asked : 1; }

// The forward's register cap (LatentAttentionVariant::fwd_min_blocks) for head size D at mt rows
// of 16 a warp; 0 = none. The default 5 at D 32 (one row tile a warp): on an H100 at E 2048 it
// took the forward from 0.365 to 0.322 ms at S 8192 and from 0.112 to 0.100 at S 4096, measured
// beside a block layout since dropped (docs/PERF.md, 2026-12-06, session 28; not yet timed on
// this tree); at D 16 the compiler's choice already fits 5 blocks. At D 64 4, the blocks its
// shared memory allows: ptxas's own choice moves between 128 and 139 registers with small
// changes to the kernel, and above 128 a block an SM is lost.
int fwd_min_blocks(int D, int mt, int asked) {
  HYDRA_CHECK(asked == 0 || asked == -1 || (mt == 1 && D <= 32 && (asked == 5 || asked == 6)),
              "fwd_min_blocks " << asked << " (built: 5, 6 at one row tile a warp, d 16 and 32)");
  if (asked == -1) return 0;
  if (asked == 0) return D == 32 && mt == 1 ? 5 : D == 64 ? 4 : 0;
  return asked;
}

// kMinBlocks 0: no minimum (the compiler's register choice; 1 would change it).
template <int D, int MT, int kMinBlocks = 0, int kPoly = 0>
void forward_launch(const LatentAttentionShape& x, const FwdParams& p, cudaStream_t stream) {
  forward_kernel<D, MT, kMinBlocks, kPoly><<<forward_grid(x), threads_for(MT), 0, stream>>>(p);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace

bool latent_attention_supports(int head_dim) { return head_dim == 16 || head_dim == 32 || head_dim == 64; }

void latent_attention_forward(const LatentAttentionShape& shape, float scale, BshdConst q, BshdConst k, BshdConst v,
                              BshdMut out, float* lse, cudaStream_t stream, const LatentAttentionVariant& variant) {
  check_shape(shape);
  check_view(q.data, strides_of(q), "q");
  check_view(k.data, strides_of(k), "k");
  check_view(v.data, strides_of(v), "v");
  check_view(out.data, strides_of(out), "out");
  HYDRA_CHECK(lse != nullptr, "lse is null");
  const FwdParams p{q.data,         k.data,         v.data,         out.data,   lse,
                    strides_of(q),  strides_of(k),  strides_of(v),  strides_of(out),
                    shape.seq,      shape.heads,    shape.heads / shape.kv_heads,
                    scale * kLog2e,   variant.tiles_inner, shape.value_shift};
  HYDRA_CHECK(variant.fwd_mtiles >= 0 && variant.fwd_mtiles <= 2, "fwd_mtiles " << variant.fwd_mtiles);
  if (variant.wgmma_forward) return forward_wgmma(shape, p, stream);
  const int mt = fwd_mtiles(shape.head_dim, variant.fwd_mtiles);
  HYDRA_CHECK(variant.fwd_poly_exp == 0 || ((variant.fwd_poly_exp == 1 || variant.fwd_poly_exp == 2) && mt == 1 &&
                                               shape.head_dim <= 32 && variant.fwd_min_blocks == 0),
              "fwd_poly_exp " << variant.fwd_poly_exp << " (built: 1, 2 at d 16 and 32 with the default register cap)");
  const int min_blocks = fwd_min_blocks(shape.head_dim, mt, variant.fwd_min_blocks);
  switch (shape.head_dim * 1000 + mt * 100 + min_blocks * 10 + variant.fwd_poly_exp) {
    case 16100: return forward_launch<16, 1>(shape, p, stream);
    case 16101: return forward_launch<16, 1, 0, 1>(shape, p, stream);
    case 16102: return forward_launch<16, 1, 0, 2>(shape, p, stream);
    case 16150: return forward_launch<16, 1, 5>(shape, p, stream);
    case 16160: return forward_launch<16, 1, 6>(shape, p, stream);
    case 16200: return forward_launch<16, 2>(shape, p, stream);
    case 32100: return forward_launch<32, 1>(shape, p, stream);
    case 32150: return forward_launch<32, 1, 5>(shape, p, stream);
    case 32151: return forward_launch<32, 1, 5, 1>(shape, p, stream);
    case 32152: return forward_launch<32, 1, 5, 2>(shape, p, stream);
    case 32160: return forward_launch<32, 1, 6>(shape, p, stream);
    case 32200: return forward_launch<32, 2>(shape, p, stream);
    case 64100: return forward_launch<64, 1>(shape, p, stream);
    case 64140: return forward_launch<64, 1, 4>(shape, p, stream);
  }
  HYDRA_FAIL(::hydra::common::RuntimeFailure, "latent attention forward: no kernel built for d "
                                                  << shape.head_dim << ", " << mt << " row tiles a warp, register cap "
                                                  << min_blocks);
}


}  // namespace hydra::kernels
