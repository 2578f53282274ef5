// Latent flash attention, backward: dq, dk, dv from q, k, v, out, dout and the forward's lse.
// The design invariants are stated at the top of latent_attention.cu; in short, a block owns
// one key tile of one KV head and walks the query heads of its group (or of one slice of it,
// under a head split), so dk and dv are summed over the group in registers, and dq is summed
// over key tiles by fp32 atomics into a workspace, then scaled and converted to bf16.
#include "kernels/latent_attention.h"

#include <algorithm>
#include <type_traits>

#include "kernels/latent_attention_common.cuh"

namespace hydra::kernels {
namespace {

using namespace detail;


// delta[b, h, i] = sum_d dout * out (fp32), one thread per row.
template <int D>
__global__ void row_dot_kernel(const bf16* out, Strides os, const bf16* dout, Strides ds, float* delta, int batch,
                               int seq, int heads) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [B, H, S]
  if (idx >= static_cast<int64_t>(batch) * heads * seq) return;
  const int i = idx % seq, h = (idx / seq) % heads, b = idx / (static_cast<int64_t>(seq) * heads);
  const uint4* o = reinterpret_cast<const uint4*>(out + b * os.b + i * os.s + h * os.h);
  const uint4* d = reinterpret_cast<const uint4*>(dout + b * ds.b + i * ds.s + h * ds.h);
  float acc = 0.f;
#pragma unroll
  for (int c = 0; c < D / 8; ++c) {
    const uint4 ov = o[c], dv = d[c];
    const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(&ov);
    const __nv_bfloat162* d2 = reinterpret_cast<const __nv_bfloat162*>(&dv);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 a = __bfloat1622float2(o2[e]), c2 = __bfloat1622float2(d2[e]);
      acc += a.x * c2.x + a.y * c2.y;
    }
  }
  delta[idx] = acc;
}

template <int D>
struct BwdSmem {
  static constexpr int W = D + kPad;
  bf16 k[kTile][W];
  bf16 v[kTile][W];
  bf16 q[2][kTile][W];
  bf16 dout[2][kTile][W];
  bf16 ds[kTile][kTile + kPad];  // dS^T of the current tile pair: [key][query]
  float lse2[2][kTile];          // lse in log2 units; +inf past S
  float delta[2][kTile];
};

// Blocks per SM the register allocation must leave room for (0: the compiler's choice). The
// head split's epilogue made the compiler take registers enough to lose one resident block an
// SM at D 32 (MT 1), D 64 and D 16 (MT 2) against the kernel before it; these bounds keep that
// occupancy (nvcc 13, sm_90a: 123, 168 and 168 registers; D 64 and D 16 MT 2 spill 28 and 8
// bytes, in the epilogue, once a block).
__host__ __device__ constexpr int min_resident_blocks(int D, int MT) {
  return D == 64 ? 3 : D == 32 && MT == 1 ? 4 : D == 16 && MT == 2 ? 5 : 0;
}

// A step's lse (in log2 units; +inf past S, so those queries' probabilities are exactly 0) and
// delta for query tile qt of head h, by the block's kT threads.
template <int kT>
__device__ __forceinline__ void load_row_sums(float* lse2, float* delta, const BwdParams& p, int b, int h, int qt) {
  const int64_t base = (static_cast<int64_t>(b) * p.heads + h) * p.seq;
  for (int i = threadIdx.x; i < kTile; i += kT) {
    const int row = qt * kTile + i;
    lse2[i] = row < p.seq ? p.lse[base + row] * kLog2e : INFINITY;
    delta[i] = row < p.seq ? p.delta[base + row] : 0.f;
  }
}

// The block's key and value tiles (the value shift applied), asynchronously.
template <int D, int kT>
__device__ __forceinline__ void load_key_tile(BwdSmem<D>& sm, const BwdParams& p, const BackwardBlock& blk) {
  load_tile<D, kT>(sm.k, p.k + blk.b * p.ks.b + blk.hk * p.ks.h, p.ks.s, blk.kt * kTile, p.seq);
  load_tile<D, kT>(sm.v, p.v + blk.b * p.vs.b + blk.hk * p.vs.h, p.vs.s, blk.kt * kTile, p.seq, p.value_shift);
}

// One step of the backward: the key tile (sm.k, sm.v) against the query tile in stage st (q,
// dout, lse2, delta): dk and dv accumulate, dq receives this tile's ds k for the warp's MT x 16
// queries. diag: the causal diagonal (query tile == key tile). Synchronises the block once (ds^T
// goes through shared memory: the dq product needs all 64 keys of the tile, held by all warps).
template <int D, int MT>
__device__ __forceinline__ void backward_step(BwdSmem<D>& sm, int st, bool diag, float scale_log2, int row_base,
                                              int lane, float (&dk)[MT][D / 8][4], float (&dv)[MT][D / 8][4],
                                              float (&dq)[MT][D / 8][4]) {
  constexpr int W = D + kPad;
  const int g = lane / 4, t = lane % 4;
  // s = k q^T and dp = v dout^T: MT x 16 keys x 64 queries each.
  float s[MT][8][4], dp[MT][8][4];
  zero_fragments(s);
  zero_fragments(dp);
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    uint32_t kf[MT][4], vf[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a_frag<W>(kf[mt], sm.k, row_base + 16 * mt, kc * 16, lane);
      a_frag<W>(vf[mt], sm.v, row_base + 16 * mt, kc * 16, lane);
    }
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t bq[4], bd[4];
      b_pair<W>(bq, sm.q[st], np * 16, kc * 16, lane);
      b_pair<W>(bd, sm.dout[st], np * 16, kc * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(s[mt][2 * np], kf[mt], bq[0], bq[1]);
        mma(s[mt][2 * np + 1], kf[mt], bq[2], bq[3]);
        mma(dp[mt][2 * np], vf[mt], bd[0], bd[1]);
        mma(dp[mt][2 * np + 1], vf[mt], bd[2], bd[3]);
      }
    }
  }

  score_gradients<MT>(s, dp, sm.lse2[st], sm.delta[st], scale_log2, diag, row_base, lane);

  // dv += p^T dout, dk += ds^T q (the scale is applied once at the end).
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t ap[MT][4], ad[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      acc_as_a(ap[mt], s[mt], kk);
      acc_as_a(ad[mt], dp[mt], kk);
    }
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t bd[4], bq[4];
      bt_pair<W>(bd, sm.dout[st], kk * 16, np * 16, lane);
      bt_pair<W>(bq, sm.q[st], kk * 16, np * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(dv[mt][2 * np], ap[mt], bd[0], bd[1]);
        mma(dv[mt][2 * np + 1], ap[mt], bd[2], bd[3]);
        mma(dk[mt][2 * np], ad[mt], bq[0], bq[1]);
        mma(dk[mt][2 * np + 1], ad[mt], bq[2], bq[3]);
      }
    }
  }

  // ds^T to shared memory: the dq product needs all 64 keys of the tile, held by all warps.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int key = row_base + 16 * mt + g;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      *reinterpret_cast<uint32_t*>(&sm.ds[key][nb * 8 + 2 * t]) = pack_bf16(dp[mt][nb][0], dp[mt][nb][1]);
      *reinterpret_cast<uint32_t*>(&sm.ds[key + 8][nb * 8 + 2 * t]) = pack_bf16(dp[mt][nb][2], dp[mt][nb][3]);
    }
  }
  __syncthreads();

  // dq (this warp's MT x 16 queries) = ds k: the caller adds it to the sum over key tiles.
  zero_fragments(dq);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) at_frag<kTile + kPad>(a[mt], sm.ds, kk * 16, row_base + 16 * mt, lane);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t bb[4];
      bt_pair<W>(bb, sm.k, kk * 16, np * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(dq[mt][2 * np], a[mt], bb[0], bb[1]);
        mma(dq[mt][2 * np + 1], a[mt], bb[2], bb[3]);
      }
    }
  }
}

// One block per (key tile, head slice, KV head, batch); each warp owns MT m-tiles of 16 keys,
// so that every q and dout fragment read from shared memory feeds MT products. The k and v
// fragments of the A operand are re-read from shared memory each step rather than held:
// registers go to the score and gradient accumulators. (dq by the TMA unit's bulk reduction, a
// row a request, instead of float2 atomics ran 6-16% slower: H100, docs/PERF.md, session 33.)
template <int D, int MT>
__global__ void __launch_bounds__(threads_for(MT), min_resident_blocks(D, MT)) backward_kernel(const BwdParams p) {
  constexpr int kT = threads_for(MT);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  BwdSmem<D>& sm = *reinterpret_cast<BwdSmem<D>*>(smem_raw);

  const BackwardBlock blk = backward_block(p);
  const int kt = blk.kt, b = blk.b, h_first = blk.h_first, per_head = blk.per_head, total = blk.total;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_base = warp * 16 * MT;  // keys (and, for dq, queries) of this warp's m-tiles

  // Stage st <- (query head of the group, query tile) of step it.
  auto load_step = [&](int it, int st) {
    const int h = h_first + it / per_head, qt = kt + it % per_head;
    load_tile<D, kT>(sm.q[st], p.q + b * p.qs.b + h * p.qs.h, p.qs.s, qt * kTile, p.seq);
    load_tile<D, kT>(sm.dout[st], p.dout + b * p.dos.b + h * p.dos.h, p.dos.s, qt * kTile, p.seq);
    load_row_sums<kT>(sm.lse2[st], sm.delta[st], p, b, h, qt);
  };

  load_key_tile<D, kT>(sm, p, blk);
  load_step(0, 0);
  cp_async_commit();

  float dk[MT][D / 8][4], dv[MT][D / 8][4];
  zero_fragments(dk);
  zero_fragments(dv);

  for (int it = 0; it < total; ++it) {
    const int st = it & 1;
    const int h = h_first + it / per_head, qt = kt + it % per_head;
    cp_async_wait_all();
    __syncthreads();  // step it visible; stage st ^ 1 and ds free
    if (it + 1 < total) load_step(it + 1, st ^ 1);
    cp_async_commit();

    float dq[MT][D / 8][4];
    backward_step<D, MT>(sm, st, qt == kt, p.scale_log2, row_base, lane, dk, dv, dq);
    add_query_gradients<D, MT>(p, dq, qt, h, b, row_base, lane);
  }

  write_key_gradients<D, MT>(p, blk, row_base, lane, dk, dv);
}

// dq = scale * dq_acc, fp32 [B, S, H, D] -> bf16 with dq's strides; 8 elements per thread.
template <int D>
__global__ void dq_convert_kernel(const float* acc, bf16* dq, Strides s, int batch, int seq, int heads, float scale) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [B, S, H, D / 8]
  if (idx >= static_cast<int64_t>(batch) * seq * heads * (D / 8)) return;
  const int c = idx % (D / 8);
  const int64_t row = idx / (D / 8);  // (b S + i) H + h
  const int h = row % heads, i = (row / heads) % seq, b = row / (static_cast<int64_t>(heads) * seq);
  const float4 x0 = reinterpret_cast<const float4*>(acc)[2 * idx];
  const float4 x1 = reinterpret_cast<const float4*>(acc)[2 * idx + 1];
  __align__(16) __nv_bfloat162 v[4] = {__floats2bfloat162_rn(x0.x * scale, x0.y * scale),
                                       __floats2bfloat162_rn(x0.z * scale, x0.w * scale),
                                       __floats2bfloat162_rn(x1.x * scale, x1.y * scale),
                                       __floats2bfloat162_rn(x1.z * scale, x1.w * scale)};
  *reinterpret_cast<uint4*>(dq + b * s.b + i * s.s + h * s.h + c * 8) = *reinterpret_cast<const uint4*>(v);
}

__device__ __forceinline__ void add8(float (&acc)[8], const float* from) {  // from: 16-byte aligned
  const float4 a = reinterpret_cast<const float4*>(from)[0], b = reinterpret_cast<const float4*>(from)[1];
  acc[0] += a.x, acc[1] += a.y, acc[2] += a.z, acc[3] += a.w;
  acc[4] += b.x, acc[5] += b.y, acc[6] += b.z, acc[7] += b.w;
}

// Under a head split: dk = scale * (sum of the slices' partials), dv = their sum moved back
// through the value shift (the second half of row j's channels is the gradient of row j + 1's
// read, 0 for the last row), both bf16 with their own strides. The slices are added in index
// order, so the result does not depend on which block finished first. 8 channels per thread:
// D / 2 is a multiple of 8, so a thread's channels lie in one half.
template <int D>
__global__ void kv_sum_kernel(const float* dk_part, const float* dv_part, int slices, bf16* dk, Strides dks, bf16* dv,
                              Strides dvs, int batch, int seq, int kv_heads, float scale, bool value_shift) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [B, S, H_kv, D / 8]
  const int64_t per_slice = static_cast<int64_t>(batch) * seq * kv_heads * D;
  if (idx >= per_slice / 8) return;
  const int c = idx % (D / 8);
  const int64_t row = idx / (D / 8);  // (b S + i) H_kv + hk
  const int hk = row % kv_heads, i = (row / kv_heads) % seq, b = row / (static_cast<int64_t>(kv_heads) * seq);
  const bool from_next = value_shift && c * 8 >= D / 2;
  float k8[8] = {}, v8[8] = {};
  for (int sl = 0; sl < slices; ++sl) {
    add8(k8, dk_part + sl * per_slice + row * D + c * 8);
    if (!from_next) {
      add8(v8, dv_part + sl * per_slice + row * D + c * 8);
    } else if (i + 1 < seq) {
      add8(v8, dv_part + sl * per_slice + (row + kv_heads) * D + c * 8);
    }
  }
  __align__(16) __nv_bfloat162 ko[4], vo[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    ko[e] = __floats2bfloat162_rn(k8[2 * e] * scale, k8[2 * e + 1] * scale);
    vo[e] = __floats2bfloat162_rn(v8[2 * e], v8[2 * e + 1]);
  }
  *reinterpret_cast<uint4*>(dk + b * dks.b + i * dks.s + hk * dks.h + c * 8) = *reinterpret_cast<const uint4*>(ko);
  *reinterpret_cast<uint4*>(dv + b * dvs.b + i * dvs.s + hk * dvs.h + c * 8) = *reinterpret_cast<const uint4*>(vo);
}

// m-tiles per warp (asked: a LatentAttentionVariant's choice). 1 was the default everywhere
// (fwd_mtiles in latent_attention.cu says why); with the blocks ordered longest first across the
// grid, 2 became the faster backward at head size 16 at all nine E 768 shapes of `hydra bench
// attention` (H200, 2026-12-04: equal to 6% faster, 0.125 -> 0.117 ms at B 8, S 1024) and at
// head size 32 at S 16384 (3.88 -> 3.41 ms), but not at 4096 or 8192 (4% and 8% slower). Under
// the head split (more blocks of shorter chains) 2 became the faster at head size 32 from S 4096
// too: B 1, S 4096 0.275 -> 0.251 ms and S 8192 0.979 -> 0.897 ms (H100, 2026-12-05, the same in
// two calls). S 1024 at head size 32 has not been compared: it keeps 1.
int bwd_mtiles(int D, int seq, int asked) {
  if (D == 64) return 1;  // 2 spills: not built
  if (asked) return asked;
  return D == 16 || seq >= 4096 ? 2 : 1;
}

// Byte offsets into the backward's workspace: dq accumulator, row sums, and (head split only)
// the slices' dk and dv partials.
struct WorkspaceLayout {
  size_t dq_acc = 0, delta = 0, dk_part = 0, dv_part = 0, total = 0;
};

WorkspaceLayout workspace_layout(const LatentAttentionShape& x, int slices) {
  const size_t rows = static_cast<size_t>(x.batch) * x.heads * x.seq;
  const size_t part = slices > 1 ? align16(sizeof(float) * slices * x.batch * x.seq * x.kv_heads * x.head_dim) : 0;
  WorkspaceLayout l;
  l.delta = align16(sizeof(float) * rows * x.head_dim);
  l.dk_part = l.delta + align16(sizeof(float) * rows);
  l.dv_part = l.dk_part + part;
  l.total = l.dv_part + part;
  return l;
}

// f(std::integral_constant<int, D>, std::integral_constant<int, MT>) for the built backward
// kernel of head size D and MT m-tiles a warp (D 64: one m-tile only): the one place that maps
// the runtime choice onto the template instances.
template <typename F>
auto with_backward_instance(int D, int mt, F&& f) {
  using Mt1 = std::integral_constant<int, 1>;
  using Mt2 = std::integral_constant<int, 2>;
  switch (D * 10 + mt) {
    case 161: return f(std::integral_constant<int, 16>{}, Mt1{});
    case 162: return f(std::integral_constant<int, 16>{}, Mt2{});
    case 321: return f(std::integral_constant<int, 32>{}, Mt1{});
    case 322: return f(std::integral_constant<int, 32>{}, Mt2{});
    default: return f(std::integral_constant<int, 64>{}, Mt1{});
  }
}

// Blocks of backward_kernel<D, MT> one SM holds at once (registers, shared memory, threads).
int resident_blocks(int D, int mt) {
  return with_backward_instance(D, mt, [](auto d, auto m) {
    constexpr int kD = decltype(d)::value, kMt = decltype(m)::value;
    const int smem = static_cast<int>(sizeof(BwdSmem<kD>));
    HYDRA_KERNEL_CHECK(
        cudaFuncSetAttribute(backward_kernel<kD, kMt>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int blocks = 0;
    HYDRA_KERNEL_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, backward_kernel<kD, kMt>, threads_for(kMt), smem));
    return std::max(blocks, 1);
  });
}

// latent_attention_backward_head_split's rule. Blocks start longest first, so the grid ends
// evenly when no block's chain is much longer than the mean work of a block slot; where the
// longest chain (key tile 0 over every query tile of its heads) is longer, splitting the heads
// shortens it at the price of the partials' extra pass. The bound is the mean itself: at B 1,
// S 8192, d 32 (chain 256 steps, a slot's mean 250) a split of 4 beat 2 in both H100 calls of
// 2026-12-05 (0.926 against 0.938 ms, 0.936 against 0.960); a bound of 1.25 x the mean took 2.
constexpr double kChainOverMean = 1.0;

int head_split(const LatentAttentionShape& x, const LatentAttentionVariant& variant) {
  const int group = x.heads / x.kv_heads;
  HYDRA_CHECK(variant.bwd_head_split >= 0 && (variant.bwd_head_split == 0 || group % variant.bwd_head_split == 0),
              "bwd_head_split " << variant.bwd_head_split << " does not divide the group of " << group << " query heads");
  if (variant.bwd_head_split) return variant.bwd_head_split;
  int device = 0, sms = 0;
  HYDRA_KERNEL_CHECK(cudaGetDevice(&device));
  HYDRA_KERNEL_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const double slots = static_cast<double>(sms) * resident_blocks(x.head_dim, bwd_mtiles(x.head_dim, x.seq, variant.bwd_mtiles));
  const double tiles = (x.seq + kTile - 1) / kTile;
  const double mean_steps = tiles * (tiles + 1) / 2 * x.heads * x.batch / slots;
  for (int s = 1; s < group; ++s) {
    if (group % s == 0 && tiles * (group / s) <= kChainOverMean * mean_steps) return s;
  }
  return group;
}

template <int D, int kMt>
void backward_impl(const LatentAttentionShape& x, BwdParams p, BshdConst out, BshdConst dout, BshdMut dq, BshdMut dk,
                   BshdMut dv, void* workspace, cudaStream_t stream, const LatentAttentionVariant& variant) {
  const int64_t rows = static_cast<int64_t>(x.batch) * x.heads * x.seq;
  const WorkspaceLayout layout = workspace_layout(x, p.slices);
  char* ws = static_cast<char*>(workspace);
  float* dq_acc = reinterpret_cast<float*>(ws + layout.dq_acc);
  float* delta = reinterpret_cast<float*>(ws + layout.delta);
  if (p.slices > 1) {
    p.dk_part = reinterpret_cast<float*>(ws + layout.dk_part);
    p.dv_part = reinterpret_cast<float*>(ws + layout.dv_part);
  }
  HYDRA_KERNEL_CHECK(cudaMemsetAsync(dq_acc, 0, layout.delta - layout.dq_acc, stream));
  constexpr int kRowThreads = 256;
  row_dot_kernel<D><<<static_cast<unsigned>((rows + kRowThreads - 1) / kRowThreads), kRowThreads, 0, stream>>>(
      out.data, strides_of(out), dout.data, strides_of(dout), delta, x.batch, x.seq, x.heads);
  HYDRA_KERNEL_CHECK(cudaGetLastError());

  p.dq_acc = dq_acc;
  p.delta = delta;
  const int64_t blocks = static_cast<int64_t>((x.seq + kTile - 1) / kTile) * p.slices * x.kv_heads * x.batch;
  HYDRA_CHECK(blocks < (int64_t{1} << 31), "latent attention backward: grid of " << blocks << " blocks");
  if (variant.wgmma_backward) {
    backward_wgmma(x, p, blocks, stream);
  } else {
    const auto kernel = backward_kernel<D, kMt>;
    const int smem = static_cast<int>(sizeof(BwdSmem<D>));
    // Above 48 KB a block needs an explicit opt-in; setting it every call is cheap and thread-safe.
    HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<static_cast<unsigned>(blocks), threads_for(kMt), smem, stream>>>(p);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  }
  if (p.slices > 1) {
    const int64_t pieces = static_cast<int64_t>(x.batch) * x.seq * x.kv_heads * (D / 8);
    kv_sum_kernel<D><<<static_cast<unsigned>((pieces + kRowThreads - 1) / kRowThreads), kRowThreads, 0, stream>>>(
        p.dk_part, p.dv_part, p.slices, dk.data, strides_of(dk), dv.data, strides_of(dv), x.batch, x.seq, x.kv_heads,
        p.scale, p.value_shift);
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  }

  const int64_t pieces = rows * (D / 8);
  dq_convert_kernel<D><<<static_cast<unsigned>((pieces + kRowThreads - 1) / kRowThreads), kRowThreads, 0, stream>>>(
      dq_acc, dq.data, strides_of(dq), x.batch, x.seq, x.heads, p.scale);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}


}  // namespace

int latent_attention_backward_head_split(const LatentAttentionShape& shape, const LatentAttentionVariant& variant) {
  check_shape(shape);
  return head_split(shape, variant);
}

size_t latent_attention_backward_workspace(const LatentAttentionShape& shape, const LatentAttentionVariant& variant) {
  check_shape(shape);
  return workspace_layout(shape, head_split(shape, variant)).total;
}

void latent_attention_backward(const LatentAttentionShape& shape, float scale, BshdConst q, BshdConst k, BshdConst v,
                               BshdConst out, BshdConst dout, const float* lse, BshdMut dq, BshdMut dk, BshdMut dv,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream,
                               const LatentAttentionVariant& variant) {
  check_shape(shape);
  check_view(q.data, strides_of(q), "q");
  check_view(k.data, strides_of(k), "k");
  check_view(v.data, strides_of(v), "v");
  check_view(out.data, strides_of(out), "out");
  check_view(dout.data, strides_of(dout), "dout");
  check_view(dq.data, strides_of(dq), "dq");
  check_view(dk.data, strides_of(dk), "dk");
  check_view(dv.data, strides_of(dv), "dv");
  HYDRA_CHECK(lse != nullptr && workspace != nullptr, "lse or workspace is null");
  HYDRA_CHECK(reinterpret_cast<uintptr_t>(workspace) % 16 == 0, "workspace is not 16-byte aligned");
  BwdParams p{};
  p.q = q.data, p.k = k.data, p.v = v.data, p.dout = dout.data, p.lse = lse;
  p.dk = dk.data, p.dv = dv.data;
  p.qs = strides_of(q), p.ks = strides_of(k), p.vs = strides_of(v), p.dos = strides_of(dout);
  p.dks = strides_of(dk), p.dvs = strides_of(dv);
  p.batch_size = shape.batch, p.seq = shape.seq, p.heads = shape.heads, p.group = shape.heads / shape.kv_heads;
  p.scale = scale, p.scale_log2 = scale * kLog2e;
  p.tiles_inner = variant.tiles_inner;
  p.value_shift = shape.value_shift;
  HYDRA_CHECK(variant.bwd_mtiles >= 0 && variant.bwd_mtiles <= 2, "bwd_mtiles " << variant.bwd_mtiles);
  p.slices = head_split(shape, variant);
  const size_t needed = workspace_layout(shape, p.slices).total;
  HYDRA_CHECK(workspace_bytes >= needed, "latent attention backward: workspace of " << workspace_bytes << " bytes, "
                                                                                    << needed << " needed");
  const int mt = bwd_mtiles(shape.head_dim, shape.seq, variant.bwd_mtiles);
  with_backward_instance(shape.head_dim, mt, [&](auto d, auto m) {
    backward_impl<decltype(d)::value, decltype(m)::value>(shape, p, out, dout, dq, dk, dv, workspace, stream, variant);
  });
}

}  // namespace hydra::kernels
