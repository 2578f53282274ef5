// Latent flash attention, forward, on Hopper's warpgroup MMA (wgmma, sm_90a): the first step of
// moving the latent kernels off mma.sync (issue 15). Same arguments, outputs and block order as
// latent_attention.cu's forward_kernel (whose design invariants hold here too); what differs:
// - A block is one warpgroup (4 warps, 128 threads) and owns 64 queries of one head, as the
//   mma.sync kernel's 4 warps do. S = q k^T is one m64n64 product per 16 channels, both operands
//   read by the tensor cores straight from shared memory through matrix descriptors; o += p v takes
//   p from registers (the packed probabilities, as before) and v from shared memory, transposed
//   (v is stored [key][channel]: the product's N runs along the stored rows).
// - Shared tiles use the no-swizzle canonical layout: 8-row x 16-byte core matrices, each 128
//   contiguous bytes, a row's D / 8 core matrices side by side (blocked(r, c) below). The
//   descriptor offsets are kCoreAlongRow and kRowBlock bytes; which of them the hardware reads as
//   the "leading" and which as the "stride" offset, for K-major and for transposed operands, is
//   what bench/probes/wgmma_probe.cu settles (kDescriptor* below must follow its result).
// - The accumulators of an m64nN product hold, per warp, 16 rows in the layout of mma.sync's
//   m16n8 tiles side by side, so the online softmax is the mma.sync kernel's, unchanged.
// - Not yet here: overlap of one tile's softmax with the next tile's products (each product is
//   waited for at once), two warpgroups ping-ponging, TMA loads. This kernel checks the building
//   blocks against the float64 tests and gives the baseline those steps are measured against.
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

// Descriptor byte offsets, (leading, stride), for an operand whose core matrices lie
// kCoreBytes apart along a stored row and D / 8 x kCoreBytes apart from one 8-row block to the
// next. K-major: q and k (their rows hold the product's K). Transposed: v (its rows hold K, the
// product's N runs along them). Each pair is one of the probe's two readings.
template <int D>
struct DescriptorOffsets {
  static constexpr uint32_t along_row = kCoreBytes, row_block = D / 8 * kCoreBytes;
  static constexpr uint32_t k_major_leading = along_row, k_major_stride = row_block;
  static constexpr uint32_t transposed_leading = row_block, transposed_stride = along_row;
};

__device__ __forceinline__ uint64_t descriptor(const void* tile, uint32_t byte_offset, uint32_t leading,
                                               uint32_t stride) {
  const uint64_t start = (smem_u32(tile) + byte_offset) & 0x3FFFF;
  return (start >> 4) | (static_cast<uint64_t>(leading >> 4) << 16) | (static_cast<uint64_t>(stride >> 4) << 32);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_and_wait() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
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

// s (+)= a b: m64n64k16, both operands from descriptors, B K-major.
__device__ __forceinline__ void mma_scores(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,"
      "%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : HYDRA_ACC8(0), HYDRA_ACC8(8), HYDRA_ACC8(16), HYDRA_ACC8(24)
      : "l"(a), "l"(b), "r"(accumulate));
}

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

template <int D>
__global__ void __launch_bounds__(kWarpgroup) forward_wgmma_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Offsets = DescriptorOffsets<D>;
  __shared__ __align__(128) bf16 sq[kTile * D];
  __shared__ __align__(128) bf16 sk[2][kTile * D];
  __shared__ __align__(128) bf16 sv[2][kTile * D];

  const auto [qt, h, b, hk] = forward_block(p.seq, p.heads, p.group, p.tiles_inner);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const bf16* q = p.q + b * p.qs.b + h * p.qs.h;
  const bf16* k = p.k + b * p.ks.b + hk * p.ks.h;
  const bf16* v = p.v + b * p.vs.b + hk * p.vs.h;
  const int q0 = qt * kTile, row_base = 16 * warp;
  const float c = p.scale_log2;

  load_blocked<D>(sq, q, p.qs.s, q0, p.seq);
  load_blocked<D>(sk[0], k, p.ks.s, 0, p.seq);
  load_blocked<D>(sv[0], v, p.vs.s, 0, p.seq, p.value_shift);
  cp_async_commit();

  float o[D / 2];  // m64nD accumulator: n-block i of 8 channels is o[4 i .. 4 i + 3]
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int j = 0; j <= qt; ++j) {
    const int st = j & 1;
    cp_async_wait_all();
    fence_async_proxy();
    __syncthreads();  // tile j visible to the tensor cores; everyone is done with stage st ^ 1
    if (j < qt) {
      load_blocked<D>(sk[st ^ 1], k, p.ks.s, (j + 1) * kTile, p.seq);
      load_blocked<D>(sv[st ^ 1], v, p.vs.s, (j + 1) * kTile, p.seq, p.value_shift);
    }
    cp_async_commit();

    // Raw scores q k^T, 64 queries x 64 keys: 16 channels a product (2 core matrices along a row).
    float s[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) s[i] = 0.f;
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      const uint32_t at = kc * 2 * kCoreBytes;
      mma_scores(s, descriptor(sq, at, Offsets::k_major_leading, Offsets::k_major_stride),
                 descriptor(sk[st], at, Offsets::k_major_leading, Offsets::k_major_stride), kc);
    }
    wgmma_commit_and_wait();
    hold_registers(s);

    // Online softmax as forward_kernel's (s[4 nb + e] is its s[nb][e]); only the diagonal tile is
    // masked, and the max is taken on raw scores.
    const bool diag = j == qt;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = nb * 8 + 2 * t + (e & 1), row = row_base + g + (e >> 1) * 8;
        if (diag && key > row) s[4 * nb + e] = -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[4 * nb + e]);
      }
    }
    float neg[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);  // finite from tile 0 on: every row sees key 0
      const float alpha = exp2_approx((m[r] - m_new) * c);
      m[r] = m_new;
      neg[r] = -m_new * c;
      l[r] *= alpha;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[4 * i + 2 * r] *= alpha;
        o[4 * i + 2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      s[i] = exp2_approx(fmaf(s[i], c, neg[(i >> 1) & 1]));
      l[(i >> 1) & 1] += s[i];
    }

    // o += p v: keys 16 kk .. 16 kk + 15 are row blocks 2 kk and 2 kk + 1 of v. All four A
    // fragments are packed before the fence: registers written between two wgmmas make the
    // compiler wait for the first.
    uint32_t a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int e = 0; e < 4; ++e) a[kk][e] = pack_bf16(s[8 * kk + 2 * e], s[8 * kk + 2 * e + 1]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      mma_values(o, a[kk],
                 descriptor(sv[st], kk * 2 * Offsets::row_block, Offsets::transposed_leading,
                            Offsets::transposed_stride));
    }
    wgmma_commit_and_wait();
    hold_registers(o);
  }

  // Epilogue: the quad's partial sums, normalise, write out and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = l[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = q0 + row_base + g + r * 8;
    if (row >= p.seq) continue;
    const float inv = 1.f / sum;
    bf16* out = p.out + b * p.os.b + row * p.os.s + h * p.os.h;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      *reinterpret_cast<__nv_bfloat162*>(out + i * 8 + 2 * t) =
          __floats2bfloat162_rn(o[4 * i + 2 * r] * inv, o[4 * i + 2 * r + 1] * inv);
    }
    if (t == 0) p.lse[(static_cast<int64_t>(b) * p.heads + h) * p.seq + row] = (m[r] * c + log2f(sum)) * kLn2;
  }
#else
  __trap();  // built without sm_90a (kernels/CMakeLists.txt builds hydra_kernels for 90a)
#endif
}

}  // namespace

void forward_wgmma(const LatentAttentionShape& x, const FwdParams& p, cudaStream_t stream) {
  const int64_t blocks = static_cast<int64_t>((x.seq + kTile - 1) / kTile) * x.heads * x.batch;
  HYDRA_CHECK(blocks < (int64_t{1} << 31), "latent attention forward: grid of " << blocks << " blocks");
  switch (x.head_dim) {
    case 16: forward_wgmma_kernel<16><<<static_cast<unsigned>(blocks), kWarpgroup, 0, stream>>>(p); break;
    case 32: forward_wgmma_kernel<32><<<static_cast<unsigned>(blocks), kWarpgroup, 0, stream>>>(p); break;
    default: forward_wgmma_kernel<64><<<static_cast<unsigned>(blocks), kWarpgroup, 0, stream>>>(p); break;
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace hydra::kernels::detail
