// Latent flash attention on Hopper's warpgroup MMA (wgmma, sm_90a), forward and backward: the
// first step of moving the latent kernels off mma.sync (issue 15). Both kernels take the mma.sync
// kernels' arguments, grids, block order and outputs (latent_attention.cu states the invariants);
// they are variants (LatentAttentionVariant::wgmma_forward, wgmma_backward) until the tests and
// the benchmark say otherwise. What differs:
// - A block is one warpgroup (4 warps, 128 threads) owning 64 rows (forward: queries; backward:
//   keys), 16 a warp as before. Products whose operands both sit in shared memory (q k^T; the
//   backward's dp = v dout^T and dq = ds k) read them through matrix descriptors; the products of
//   probabilities or score gradients (p v, p^T dout, ds^T q) take them from registers, packed
//   as for mma.sync.
// - Shared tiles use the no-swizzle canonical layout: 8-row x 16-byte core matrices of 128
//   contiguous bytes, a row's D / 8 of them side by side (blocked()). Tiles stored [row][channel]
//   are K-major where the product's K runs along the channels (q, k, v, dout in s and dp) and
//   transposed where K runs down the rows (v, dout, q, k and ds as the second factor of p v, dv,
//   dk, dq). Which of the two byte offsets the hardware takes as "leading" and which as
//   "stride" in each case bench/probes/wgmma_probe.cu settled on an H100 (Blocked's reading).
// - An m64nN accumulator holds, per warp, 16 rows in the layout of mma.sync's m16n8 tiles side by
//   side, so the softmax and the score gradients are the mma.sync kernels' code on flat arrays.
// - The forward overlaps the next tile's softmax with this tile's p v (forward_tile); the backward
//   still waits for each product at once. Not yet here: two warpgroups ping-ponging, TMA loads,
//   dq without per-thread atomics. On an H100 (session 28) both are slower than the mma.sync
//   kernels at d 32: forward 0.49 against 0.34-0.37 ms, backward 0.99 against 0.88 at S 8192.
#include "kernels/latent_attention_common.cuh"

namespace hydra::kernels::detail {
namespace {

constexpr int kWarpgroup = 128;
constexpr uint32_t kCoreBytes = 128;  // one 8 x 16-byte core matrix

// Element (r, c) of a [64][D] tile in the blocked layout.
template <int D>
__device__ __forceinline__ int blocked(int r, int c) {
  return ((r / 8) * (D / 8) + c / 8) * 64 + (r % 8) * 8 + c % 8;
}

__device__ __forceinline__ uint64_t descriptor(const void* tile, uint32_t byte_offset, uint32_t leading,
                                               uint32_t stride) {
  const uint64_t start = (smem_u32(tile) + byte_offset) & 0x3FFFF;
  return (start >> 4) | (static_cast<uint64_t>(leading >> 4) << 16) | (static_cast<uint64_t>(stride >> 4) << 32);
}

// Matrix descriptors of a blocked tile of D columns, from byte `at` (a k-chunk's start): core
// matrices lie kCoreBytes apart along a stored row and D / 8 x kCoreBytes (row_block) apart from
// one 8-row block to the next. K-major: the product's K runs along the stored rows (q, k, v, dout
// as factors of s and dp). Transposed: K runs down the rows (v in p v; dout, q in dv, dk; ds, k in
// dq). Which offset is "leading" and which "stride" in each is one of the probe's two readings.
template <int D>
struct Blocked {
  static constexpr uint32_t along_row = kCoreBytes, row_block = D / 8 * kCoreBytes;
  __device__ static uint64_t k_major(const bf16* tile, uint32_t at) {
    return descriptor(tile, at, along_row, row_block);
  }
  __device__ static uint64_t transposed(const bf16* tile, uint32_t at) {
    return descriptor(tile, at, row_block, along_row);
  }
};

// An accumulator in the mma.sync kernels' [m-tile][n-block][4] form (one m-tile), seen flat as the
// m64nN wgmma operand it is.
template <int NB>
__device__ __forceinline__ float (&flat(float (&x)[1][NB][4]))[NB * 4] {
  return *reinterpret_cast<float(*)[NB * 4]>(&x[0][0][0]);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void wgmma_commit_and_wait() {
  wgmma_commit();
  wgmma_wait<0>();
}
// Pins accumulator registers at this point of the program: the compiler sees a wgmma's asm as
// writing its accumulators at once, so without this it could move their use above the wait.
template <int N>
__device__ __forceinline__ void hold_registers(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// cp.async's stores to shared memory made visible to the tensor cores' (async proxy) reads.
__device__ __forceinline__ void fence_async_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#define HYDRA_ACC4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define HYDRA_ACC8(i) HYDRA_ACC4(i), HYDRA_ACC4(i + 4)

// o += a b: m64nDk16, A from registers (mma.sync's A fragment of the warp's 16 rows), B transposed.
// (scale-d is a predicate operand: set to true, the product accumulates.)
__device__ __forceinline__ void mma_values(float (&d)[8], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, "
      "1;\n}\n"
      : HYDRA_ACC8(0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}
__device__ __forceinline__ void mma_values(float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "{%16,%17,%18,%19}, %20, p, 1, 1, 1;\n}\n"
      : HYDRA_ACC8(0), HYDRA_ACC8(8)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}
__device__ __forceinline__ void mma_values(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,"
      "%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : HYDRA_ACC8(0), HYDRA_ACC8(8), HYDRA_ACC8(16), HYDRA_ACC8(24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}
// d (+)= a b: m64nNk16, both operands from descriptors, each transposed or not (kTA: A stored
// [K][M]; kTB: B stored [K][N]). accumulate 0 overwrites d.
template <int kTA, int kTB>
__device__ __forceinline__ void mma_shared(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "%16, %17, p, 1, 1, %19, %20;\n}\n"
      : HYDRA_ACC8(0), HYDRA_ACC8(8)
      : "l"(a), "l"(b), "r"(accumulate), "n"(kTA), "n"(kTB));
}
template <int kTA, int kTB>
__device__ __forceinline__ void mma_shared(float (&d)[8], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, %11, %12;\n}\n"
      : HYDRA_ACC8(0)
      : "l"(a), "l"(b), "r"(accumulate), "n"(kTA), "n"(kTB));
}
template <int kTA, int kTB>
__device__ __forceinline__ void mma_shared(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,"
      "%29,%30,%31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
      : HYDRA_ACC8(0), HYDRA_ACC8(8), HYDRA_ACC8(16), HYDRA_ACC8(24)
      : "l"(a), "l"(b), "r"(accumulate), "n"(kTA), "n"(kTB));
}
#undef HYDRA_ACC8
#undef HYDRA_ACC4
#endif

// Rows row0 .. row0 + 63 of a [S, D] slab into a blocked tile (load_rows: zero-filled past seq,
// the value shift where asked).
template <int D>
__device__ __forceinline__ void load_blocked(bf16* dst, const bf16* src, int64_t row_stride, int row0, int seq,
                                             bool shift = false) {
  load_rows<D, kWarpgroup>([dst](int r, int c) { return dst + blocked<D>(r, c); }, src, row_stride, row0, seq, shift);
}

// The forward's shared memory: the query tile and three stages of key and value tiles (tile t in
// stage t % 3: while tile j's p v reads its stage, tile j + 1's stage holds keys for the next
// scores and tile j + 2 loads into the stage of tile j - 1, whose p v every warp has waited for).
template <int D>
struct ForwardSmem {
  static constexpr int kStages = 3;
  bf16 q[kTile * D];
  bf16 k[kStages][kTile * D], v[kStages][kTile * D];
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One key tile j of the pipelined forward (forward_wgmma_kernel), in FlashAttention-3's order:
// on entry tile j's probabilities are packed in `a` and alpha holds the rescale that o still
// owes (running_max's); nothing is in flight. With a next tile (kMore), its scores q k^T are
// issued into s first (after its keys landed) and tile j + 2's loads start; then o is rescaled,
// tile j's p v issued, and the next tile's softmax runs on the ALUs while p v runs on the tensor
// cores. At the end p v is waited for and the next tile's probabilities packed into `a`. kMore
// is a compile-time branch, and the wait before a register read retires the product issued
// first in the same call: otherwise ptxas (C7514) serialises every wgmma, as it did for an order
// that read o after a wait for the previous call's p v.
template <int D, bool kMore>
__device__ __forceinline__ void forward_tile(const FwdParams& p, ForwardSmem<D>& sm, const ForwardBlock& blk,
                                             const bf16* k, const bf16* v, int j, float (&s)[1][8][4],
                                             float (&o)[1][D / 8][4], float (&m)[1][2], float (&l)[1][2],
                                             float (&alpha)[1][2], uint32_t (&a)[4][4], const int (&pos)[1][2],
                                             int lane) {
  constexpr int kStages = ForwardSmem<D>::kStages;
  if constexpr (kMore) {
    cp_async_wait_all();
    fence_async_proxy();
    __syncthreads();  // tile j + 1 visible to the tensor cores; tile j - 1's p v done in every warp
    if (j + 2 <= blk.qt) {
      load_blocked<D>(sm.k[(j + 2) % kStages], k, p.ks.s, (j + 2) * kTile, p.seq);
      load_blocked<D>(sm.v[(j + 2) % kStages], v, p.vs.s, (j + 2) * kTile, p.seq, p.value_shift);
    }
    cp_async_commit();
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      const uint32_t at = kc * 2 * kCoreBytes;
      mma_shared<0, 0>(flat(s), Blocked<D>::k_major(sm.q, at), Blocked<D>::k_major(sm.k[(j + 1) % kStages], at), kc);
    }
    wgmma_commit();
  }
  rescale_rows<D, 1>(o, alpha);
  // o += p v: keys 16 kk .. 16 kk + 15 are row blocks 2 kk and 2 kk + 1 of v.
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    mma_values(flat(o), a[kk], Blocked<D>::transposed(sm.v[j % kStages], kk * 2 * Blocked<D>::row_block));
  }
  wgmma_commit();
  if constexpr (kMore) {
    wgmma_wait<1>();  // the next tile's scores (p v still running)
    hold_registers(flat(s));
    int lim[1][2];
    tile_limits<1>(lim, pos, j + 1);
    float neg[1][2];
    if (j + 1 == blk.qt) {
      running_max<1, true>(s, m, l, alpha, neg, p.scale_log2, lim, lane);
    } else {
      running_max<1, false>(s, m, l, alpha, neg, p.scale_log2, lim, lane);
    }
    exponentiate<1>(s, l, neg, p.scale_log2);
  }
  wgmma_wait<0>();  // p v: o and the registers of `a` are free again
  hold_registers(flat(o));
  if constexpr (kMore) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) acc_as_a(a[kk], s[0], kk);
  }
}
#endif

// The forward on wgmma, pipelined as FlashAttention-3 does within a warpgroup (forward_tile):
// tile j + 1's softmax on the ALUs while tile j's p v runs on the tensor cores.
template <int D>
__global__ void __launch_bounds__(kWarpgroup) forward_wgmma_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  ForwardSmem<D>& sm = *reinterpret_cast<ForwardSmem<D>*>(smem_raw);

  const ForwardBlock blk = forward_block(p.seq, p.heads, p.group, p.tiles_inner);
  const int lane = threadIdx.x % 32, row_base = 16 * (threadIdx.x / 32);
  const bf16* q = p.q + blk.b * p.qs.b + blk.h * p.qs.h;
  const bf16* k = p.k + blk.b * p.ks.b + blk.hk * p.ks.h;
  const bf16* v = p.v + blk.b * p.vs.b + blk.hk * p.vs.h;
  int pos[1][2];
  row_positions<1>(pos, blk.qt, row_base, lane);

  // The query tile and key tile 0, then key tile 1 (its own group, so tile 0 need not wait for it).
  load_blocked<D>(sm.q, q, p.qs.s, blk.qt * kTile, p.seq);
  load_blocked<D>(sm.k[0], k, p.ks.s, 0, p.seq);
  load_blocked<D>(sm.v[0], v, p.vs.s, 0, p.seq, p.value_shift);
  cp_async_commit();
  if (blk.qt >= 1) {
    load_blocked<D>(sm.k[1], k, p.ks.s, kTile, p.seq);
    load_blocked<D>(sm.v[1], v, p.vs.s, kTile, p.seq, p.value_shift);
  }
  cp_async_commit();

  float o[1][D / 8][4];  // the m64nD accumulator
#pragma unroll
  for (float& x : flat(o)) x = 0.f;
  float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}}, alpha[1][2];
  float s[1][8][4];  // raw scores of the next key tile, then its probabilities
  uint32_t a[4][4];  // the current tile's probabilities as p v's A operand

  // Tile 0's scores and softmax before the loop.
  cp_async_wait_one();
  fence_async_proxy();
  __syncthreads();  // the query tile and key tile 0 visible to the tensor cores
  wgmma_fence();
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    const uint32_t at = kc * 2 * kCoreBytes;
    mma_shared<0, 0>(flat(s), Blocked<D>::k_major(sm.q, at), Blocked<D>::k_major(sm.k[0], at), kc);
  }
  wgmma_commit_and_wait();
  hold_registers(flat(s));
  {
    int lim[1][2];
    tile_limits<1>(lim, pos, 0);
    float neg[1][2];
    running_max<1, true>(s, m, l, alpha, neg, p.scale_log2, lim, lane);  // masked or not: once a block
    exponentiate<1>(s, l, neg, p.scale_log2);
  }
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) acc_as_a(a[kk], s[0], kk);

  for (int j = 0; j < blk.qt; ++j) forward_tile<D, true>(p, sm, blk, k, v, j, s, o, m, l, alpha, a, pos, lane);
  forward_tile<D, false>(p, sm, blk, k, v, blk.qt, s, o, m, l, alpha, a, pos, lane);
  write_rows_out<D, 1>(p, o, m, l, blk.qt, blk.h, blk.b, row_base, lane);
#else
  __trap();  // built without sm_90a (kernels/CMakeLists.txt builds hydra_kernels for 90a)
#endif
}

template <int D>
struct BackwardSmem {
  bf16 k[kTile * D], v[kTile * D];         // this block's keys and (shifted) values, blocked
  bf16 q[2][kTile * D], dout[2][kTile * D];  // the step's query tile and its output gradient
  bf16 ds[kTile * kTile];                  // dS^T of the step, [key][query], blocked
  float lse2[2][kTile];                    // lse in log2 units; +inf past S
  float delta[2][kTile];
};

// The backward on warpgroup MMAs: backward_kernel's blocks, steps and outputs (one warpgroup,
// 64 keys a block), its products as wgmma: s = k q^T and dp = v dout^T from shared memory (both
// K-major); dv += p^T dout and dk += ds^T q with p^T, ds^T from registers and dout, q transposed;
// dq = ds k with ds from shared memory ([key][query]: transposed) and k transposed, summed over
// key tiles by fp32 atomics as before. Each product is waited for at once.
template <int D>
__global__ void __launch_bounds__(kWarpgroup) backward_wgmma_kernel(const BwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  BackwardSmem<D>& sm = *reinterpret_cast<BackwardSmem<D>*>(smem_raw);
  const BackwardBlock blk = backward_block(p);
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, row_base = 16 * (threadIdx.x / 32);

  // Stage st <- (query head of the slice, query tile) of step it.
  auto load_step = [&](int it, int st) {
    const int h = blk.h_first + it / blk.per_head, qt = blk.kt + it % blk.per_head;
    load_blocked<D>(sm.q[st], p.q + blk.b * p.qs.b + h * p.qs.h, p.qs.s, qt * kTile, p.seq);
    load_blocked<D>(sm.dout[st], p.dout + blk.b * p.dos.b + h * p.dos.h, p.dos.s, qt * kTile, p.seq);
    const int64_t base = (static_cast<int64_t>(blk.b) * p.heads + h) * p.seq;
    for (int i = threadIdx.x; i < kTile; i += kWarpgroup) {
      const int row = qt * kTile + i;
      sm.lse2[st][i] = row < p.seq ? p.lse[base + row] * kLog2e : INFINITY;
      sm.delta[st][i] = row < p.seq ? p.delta[base + row] : 0.f;
    }
  };
  load_blocked<D>(sm.k, p.k + blk.b * p.ks.b + blk.hk * p.ks.h, p.ks.s, blk.kt * kTile, p.seq);
  load_blocked<D>(sm.v, p.v + blk.b * p.vs.b + blk.hk * p.vs.h, p.vs.s, blk.kt * kTile, p.seq, p.value_shift);
  load_step(0, 0);
  cp_async_commit();

  float dk[1][D / 8][4], dv[1][D / 8][4];  // m64nD accumulators
#pragma unroll
  for (int i = 0; i < D / 2; ++i) flat(dk)[i] = flat(dv)[i] = 0.f;

  for (int it = 0; it < blk.total; ++it) {
    const int st = it & 1;
    const int h = blk.h_first + it / blk.per_head, qt = blk.kt + it % blk.per_head;
    cp_async_wait_all();
    fence_async_proxy();
    __syncthreads();  // step it visible to the tensor cores; stage st ^ 1 and ds free
    if (it + 1 < blk.total) load_step(it + 1, st ^ 1);
    cp_async_commit();

    // s = k q^T and dp = v dout^T: 64 keys x 64 queries each.
    float s[1][8][4], dp[1][8][4];
#pragma unroll
    for (int i = 0; i < 32; ++i) flat(s)[i] = flat(dp)[i] = 0.f;
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      const uint32_t at = kc * 2 * kCoreBytes;
      mma_shared<0, 0>(flat(s), Blocked<D>::k_major(sm.k, at), Blocked<D>::k_major(sm.q[st], at), kc);
      mma_shared<0, 0>(flat(dp), Blocked<D>::k_major(sm.v, at), Blocked<D>::k_major(sm.dout[st], at), kc);
    }
    wgmma_commit_and_wait();
    hold_registers(flat(s));
    hold_registers(flat(dp));

    score_gradients<1>(s, dp, sm.lse2[st], sm.delta[st], p.scale_log2, qt == blk.kt, row_base, lane);

    // p^T and ds^T as bf16 A operands by 16 queries; ds^T also to shared memory for the dq product.
    uint32_t ap[4][4], ad[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      acc_as_a(ap[kk], s[0], kk);
      acc_as_a(ad[kk], dp[0], kk);
      // ad[kk][e]: key row_base + g + 8 (e & 1), queries 16 kk + 8 (e >> 1) + 2 t and + 1.
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = row_base + g + 8 * (e & 1), query = 16 * kk + 8 * (e >> 1) + 2 * t;
        *reinterpret_cast<uint32_t*>(&sm.ds[blocked<kTile>(key, query)]) = ad[kk][e];
      }
    }

    // dv += p^T dout, dk += ds^T q (the scale is applied once at the end): queries 16 kk .. are
    // row blocks 2 kk and 2 kk + 1 of dout and q.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t at = kk * 2 * Blocked<D>::row_block;
      mma_values(flat(dv), ap[kk], Blocked<D>::transposed(sm.dout[st], at));
      mma_values(flat(dk), ad[kk], Blocked<D>::transposed(sm.q[st], at));
    }
    wgmma_commit_and_wait();
    hold_registers(flat(dk));
    hold_registers(flat(dv));
    fence_async_proxy();  // ds's stores before the tensor cores read them
    __syncthreads();      // ds complete

    // dq (the tile's 64 queries; warp w holds 16 of them) = ds k: keys 16 kc .. are row blocks
    // 2 kc and 2 kc + 1 of both ds (64 columns: queries) and k.
    float dq[1][D / 8][4];
#pragma unroll
    for (float& x : flat(dq)) x = 0.f;
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      mma_shared<1, 1>(flat(dq), Blocked<kTile>::transposed(sm.ds, kc * 2 * Blocked<kTile>::row_block),
                       Blocked<D>::transposed(sm.k, kc * 2 * Blocked<D>::row_block), kc);
    }
    wgmma_commit_and_wait();
    hold_registers(flat(dq));
    add_query_gradients<D, 1>(p, dq, qt, h, blk.b, row_base, lane);
  }
  write_key_gradients<D, 1>(p, blk, row_base, lane, dk, dv);
#else
  __trap();  // built without sm_90a (kernels/CMakeLists.txt builds hydra_kernels for 90a)
#endif
}

// One warpgroup a block, `smem` bytes of dynamic shared memory (above 48 KB a block needs an
// explicit opt-in; setting it every call is cheap and thread-safe).
template <typename Params>
void launch_warpgroups(void (*kernel)(Params), size_t smem, int64_t blocks, const Params& p, cudaStream_t stream) {
  HYDRA_KERNEL_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), kWarpgroup, smem, stream>>>(p);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace

void backward_wgmma(const LatentAttentionShape& x, const BwdParams& p, int64_t blocks, cudaStream_t stream) {
  switch (x.head_dim) {
    case 16: return launch_warpgroups(backward_wgmma_kernel<16>, sizeof(BackwardSmem<16>), blocks, p, stream);
    case 32: return launch_warpgroups(backward_wgmma_kernel<32>, sizeof(BackwardSmem<32>), blocks, p, stream);
    default: return launch_warpgroups(backward_wgmma_kernel<64>, sizeof(BackwardSmem<64>), blocks, p, stream);
  }
}

void forward_wgmma(const LatentAttentionShape& x, const FwdParams& p, cudaStream_t stream) {
  const unsigned blocks = forward_grid(x);
  switch (x.head_dim) {
    case 16: return launch_warpgroups(forward_wgmma_kernel<16>, sizeof(ForwardSmem<16>), blocks, p, stream);
    case 32: return launch_warpgroups(forward_wgmma_kernel<32>, sizeof(ForwardSmem<32>), blocks, p, stream);
    default: return launch_warpgroups(forward_wgmma_kernel<64>, sizeof(ForwardSmem<64>), blocks, p, stream);
  }
}

}  // namespace hydra::kernels::detail
