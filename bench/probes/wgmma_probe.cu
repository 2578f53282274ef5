// A probe, not part of the build: checks on a GPU what the Hopper warpgroup MMA (wgmma) needs
// from us before the latent attention kernels move onto it (issue 15): the no-swizzle
// ("interleaved") shared-memory layout, the meaning of the descriptor's two byte offsets for
// K-major and MN-major operands, the A operand from registers, and the accumulator layout. Each
// product runs under the reading of the offsets that the kernels take, against a float64
// reference, then under the opposite one. On an H100 (2026-12-06) the kernels' reading matched
// for S from shared memory and from registers; the opposite one mismatched for S and faulted at
// P V (an illegal address: a wrong reading can reach past the tile), which is why the kernels'
// reading now runs first for every product.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -o /tmp/wgmma_probe bench/probes/wgmma_probe.cu
//   /tmp/wgmma_probe        (exit 0: every product matched under the kernels' reading)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "probe_check.cuh"

namespace {

constexpr int kRows = 64;  // queries of S and O (wgmma's M), keys of S (its N) and of P V (its K)
constexpr int kD = 32;     // head size: S's K, O's N

// Core matrices of 8 rows x 16 bytes (8 bf16), each stored as 128 contiguous bytes, row blocks
// of `cols / 8` core matrices one after another: element (r, c) of a [rows][cols] tile.
__host__ __device__ int blocked(int r, int c, int cols) { return ((r / 8) * (cols / 8) + c / 8) * 64 + (r % 8) * 8 + c % 8; }

__device__ uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Matrix descriptor, no swizzle: start address, leading and stride byte offsets (each >> 4).
__device__ uint64_t descriptor(const void* tile, uint32_t byte_offset, uint32_t lbo, uint32_t sbo) {
  const uint64_t start = (smem_address(tile) + byte_offset) & 0x3FFFF;
  return (start >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) | (static_cast<uint64_t>(sbo >> 4) << 32);
}

__device__ void fence_operands() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ void commit_and_wait() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// The accumulators pinned after the wait: the compiler sees the wgmma asm as writing them at
// once and could otherwise move their reads above the wait.
template <int N>
__device__ void hold_registers(float (&d)[N]) {
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Generic-proxy stores to shared memory made visible to the wgmma's (async proxy) reads.
__device__ void fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#define ACC8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

// d[32] (+)= A B for m64n64k16, A and B from descriptors, B K-major (no transpose).
__device__ void mma_64x64_ss(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " %32, %33, p, 1, 1, 0, 0;\n}\n"
      : ACC8(0), ACC8(8), ACC8(16), ACC8(24)
      : "l"(a), "l"(b), "r"(accumulate));
}
// The same with A from registers (the mma.sync m16n8k16 A fragment of each warp's 16 rows).
__device__ void mma_64x64_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      " {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
      : ACC8(0), ACC8(8), ACC8(16), ACC8(24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}
// d[16] (+)= A B for m64n32k16, A from registers, B transposed (MN-major: N contiguous).
__device__ void mma_64x32_rs_bt(float (&d)[16], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 1;\n}\n"
      : ACC8(0), ACC8(8)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

// d[16] (+)= A B for m64n32k16, both from descriptors and both transposed (A stored [K][M], B [K][N]).
__device__ void mma_64x32_ss_tt(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "%16, %17, p, 1, 1, 1, 1;\n}\n"
      : ACC8(0), ACC8(8)
      : "l"(a), "l"(b), "r"(accumulate));
}

// A [64 x cols] row-major bf16 matrix from global memory into the blocked layout.
__device__ void stage(const __nv_bfloat16* src, int cols, __nv_bfloat16* tile) {
  for (int i = threadIdx.x; i < kRows * cols; i += blockDim.x) tile[blocked(i / cols, i % cols, cols)] = src[i];
}

// The A fragment of warp w's rows 16 w .. 16 w + 15, k-chunk kc, from a row-major [64][cols] matrix.
__device__ void a_fragment(const __nv_bfloat16* m, int cols, int kc, uint32_t (&a)[4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int r0 = 16 * warp + g, c0 = 16 * kc + 2 * t;
  auto pair = [&](int r, int c) {
    __nv_bfloat162 v;
    v.x = m[r * cols + c];
    v.y = m[r * cols + c + 1];
    return *reinterpret_cast<uint32_t*>(&v);
  };
  a[0] = pair(r0, c0);
  a[1] = pair(r0 + 8, c0);
  a[2] = pair(r0, c0 + 8);
  a[3] = pair(r0 + 8, c0 + 8);
}

// Accumulator element i of m64nN: warp w's row 16 w + g (+ 8 for i % 4 >= 2), column 8 (i / 4) + 2 t + i % 2.
__device__ void store_acc(const float* d, int n, float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int i = 0; i < n / 2; ++i) {
    const int row = 16 * warp + g + (i % 4 >= 2 ? 8 : 0), col = 8 * (i / 4) + 2 * t + i % 2;
    out[row * n + col] = d[i];
  }
}

// S = Q K^T: A = Q (K-major) from shared memory or registers, B = K (K-major: keys' rows of d).
// K-chunk kc starts 2 kc core matrices into a row block (16 columns = two 16-byte columns).
__global__ void scores_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k, float* s, uint32_t lbo, uint32_t sbo,
                              int a_in_registers) {
  __shared__ __align__(128) __nv_bfloat16 sq[kRows * kD], sk[kRows * kD];
  stage(q, kD, sq);
  stage(k, kD, sk);
  fence_proxy();
  __syncthreads();
  float d[32];
  for (float& x : d) x = 0.f;
  uint32_t a[kD / 16][4];
  for (int kc = 0; kc < kD / 16; ++kc) a_fragment(q, kD, kc, a[kc]);
  fence_operands();
  for (int kc = 0; kc < kD / 16; ++kc) {
    const uint64_t bd = descriptor(sk, kc * 2 * 128, lbo, sbo);
    if (a_in_registers) mma_64x64_rs(d, a[kc], bd, kc);
    else mma_64x64_ss(d, descriptor(sq, kc * 2 * 128, lbo, sbo), bd, kc);
  }
  commit_and_wait();
  hold_registers(d);
  store_acc(d, 64, s);
}

// O = P V: A = P [64 queries][64 keys] from registers, B = V [64 keys][kD] with kD contiguous
// (MN-major, transposed operand). K-chunk kc (keys 16 kc ..) starts 2 kc row blocks in.
__global__ void values_kernel(const __nv_bfloat16* p, const __nv_bfloat16* v, float* o, uint32_t lbo, uint32_t sbo) {
  __shared__ __align__(128) __nv_bfloat16 sv[kRows * kD];
  stage(v, kD, sv);
  fence_proxy();
  __syncthreads();
  float d[16];
  for (float& x : d) x = 0.f;
  uint32_t a[kRows / 16][4];
  for (int kc = 0; kc < kRows / 16; ++kc) a_fragment(p, kRows, kc, a[kc]);
  fence_operands();
  for (int kc = 0; kc < kRows / 16; ++kc) mma_64x32_rs_bt(d, a[kc], descriptor(sv, kc * 2 * (kD / 8) * 128, lbo, sbo), kc);
  commit_and_wait();
  hold_registers(d);
  store_acc(d, kD, o);
}

// dQ = dS K as the backward needs it: A = dS stored [64 keys (K)][64 queries (M)] (transposed),
// B = K [64 keys (K)][kD (N)] (transposed). K-chunk kc: row blocks 2 kc of both.
__global__ void transposed_kernel(const __nv_bfloat16* a_km, const __nv_bfloat16* b_kn, float* o, uint32_t lbo_a,
                                  uint32_t sbo_a, uint32_t lbo_b, uint32_t sbo_b) {
  __shared__ __align__(128) __nv_bfloat16 sa[kRows * kRows], sb[kRows * kD];
  stage(a_km, kRows, sa);
  stage(b_kn, kD, sb);
  fence_proxy();
  __syncthreads();
  float d[16];
  for (float& x : d) x = 0.f;
  fence_operands();
  for (int kc = 0; kc < kRows / 16; ++kc) {
    mma_64x32_ss_tt(d, descriptor(sa, kc * 2 * (kRows / 8) * 128, lbo_a, sbo_a),
                    descriptor(sb, kc * 2 * (kD / 8) * 128, lbo_b, sbo_b), kc);
  }
  commit_and_wait();
  hold_registers(d);
  store_acc(d, kD, o);
}

std::vector<__nv_bfloat16> random_matrix(int rows, int cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<__nv_bfloat16> m(rows * cols);
  for (auto& x : m) x = __float2bfloat16(normal(rng));
  return m;
}

// max |got - want| / max |want| of got [rows x cols] against a [rows x inner] times b (b_kn: b
// stored [inner][cols], else [cols][inner]) in float64.
double error(const std::vector<float>& got, const std::vector<__nv_bfloat16>& a, const std::vector<__nv_bfloat16>& b,
             int rows, int inner, int cols, bool b_kn) {
  double worst = 0, scale = 0;
  int shown = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      double want = 0;
      for (int i = 0; i < inner; ++i) {
        const double bv = __bfloat162float(b_kn ? b[i * cols + c] : b[c * inner + i]);
        want += static_cast<double>(__bfloat162float(a[r * inner + i])) * bv;
      }
      const double diff = std::fabs(got[r * cols + c] - want);
      worst = std::fmax(worst, diff);
      scale = std::fmax(scale, std::fabs(want));
      // The first few mismatches, to tell a wrong descriptor (wrong values) from a wrong
      // accumulator layout (right values in other places).
      if (diff > 1e-3 * (1 + std::fabs(want)) && shown < 3) {
        std::printf("    (%d, %d): got %.4f, want %.4f\n", r, c, got[r * cols + c], want);
        ++shown;
      }
    }
  }
  return worst / scale;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  CHECK(cudaMalloc(&d, h.size() * sizeof(T)));
  CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Every product under one reading of the offsets. as_kernels: (LBO, SBO) = (next core matrix
// along K, next 8-row block) for K-major operands and the reverse for transposed (MN-major) ones,
// the reading kernels/latent_attention_wgmma.cu's Blocked takes; otherwise the opposite for both.
// A wrong reading can address past the tile and fault, which ends the process: main runs the
// kernels' reading first so that its results are printed whatever the other does.
bool run_reading(bool as_kernels, const std::vector<__nv_bfloat16>& q, const std::vector<__nv_bfloat16>& k,
                 const std::vector<__nv_bfloat16>& v, const std::vector<__nv_bfloat16>& p, __nv_bfloat16* dq,
                 __nv_bfloat16* dk, __nv_bfloat16* dv, __nv_bfloat16* dp, float* out) {
  std::vector<float> host(kRows * kRows);
  const uint32_t along_k = 128, row_block_d = (kD / 8) * 128, row_block_q = (kRows / 8) * 128;
  // K-major operands (q, k of S): (along_k, row block) as the kernels read them.
  const uint32_t lbo = as_kernels ? along_k : row_block_d, sbo = as_kernels ? row_block_d : along_k;
  bool ok = true;
  for (int regs = 0; regs <= 1; ++regs) {
    CHECK(cudaMemset(out, 0xff, kRows * kRows * sizeof(float)));
    scores_kernel<<<1, 128>>>(dq, dk, out, lbo, sbo, regs);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(host.data(), out, kRows * kRows * sizeof(float), cudaMemcpyDeviceToHost));
    const double e = error(host, q, k, kRows, kD, kRows, false);
    std::printf("S = Q K^T, A from %s, LBO %u SBO %u: relative error %.2e %s\n", regs ? "registers" : "shared memory",
                lbo, sbo, e, e < 1e-5 ? "MATCH" : "no");
    ok = ok && e < 1e-5;
  }
  // P V: B is [keys][d] with d contiguous (transposed): the kernels read (row block, along K).
  const uint32_t lbo_t = as_kernels ? row_block_d : along_k, sbo_t = as_kernels ? along_k : row_block_d;
  {
    CHECK(cudaMemset(out, 0xff, kRows * kRows * sizeof(float)));
    values_kernel<<<1, 128>>>(dp, dv, out, lbo_t, sbo_t);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(host.data(), out, kRows * kD * sizeof(float), cudaMemcpyDeviceToHost));
    const double e = error(host, p, v, kRows, kRows, kD, true);
    std::printf("O = P V, V transposed (MN-major), LBO %u SBO %u: relative error %.2e %s\n", lbo_t, sbo_t, e,
                e < 1e-5 ? "MATCH" : "no");
    ok = ok && e < 1e-5;
  }
  // ds k: A transposed from shared memory ([K][M], 64 columns a row), B transposed, both read alike.
  {
    const uint32_t lbo_a = as_kernels ? row_block_q : along_k, sbo_a = as_kernels ? along_k : row_block_q;
    CHECK(cudaMemset(out, 0xff, kRows * kRows * sizeof(float)));
    transposed_kernel<<<1, 128>>>(dp, dk, out, lbo_a, sbo_a, lbo_t, sbo_t);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(host.data(), out, kRows * kD * sizeof(float), cudaMemcpyDeviceToHost));
    // Reference: out[m][n] = sum_k p[k][m] k[k][n] (p read as [K][M]).
    std::vector<__nv_bfloat16> ds_t(kRows * kRows);  // ds^T [key][query]: A^T
    for (int m = 0; m < kRows; ++m)
      for (int kk = 0; kk < kRows; ++kk) ds_t[m * kRows + kk] = p[kk * kRows + m];
    const double e = error(host, ds_t, k, kRows, kRows, kD, true);
    std::printf("dQ = dS K, A and B transposed, A (LBO %u SBO %u), B (LBO %u SBO %u): relative error %.2e %s\n", lbo_a,
                sbo_a, lbo_t, sbo_t, e, e < 1e-5 ? "MATCH" : "no");
    ok = ok && e < 1e-5;
  }
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  const auto q = random_matrix(kRows, kD, rng), k = random_matrix(kRows, kD, rng), v = random_matrix(kRows, kD, rng);
  const auto p = random_matrix(kRows, kRows, rng);
  __nv_bfloat16 *dq = to_device(q), *dk = to_device(k), *dv = to_device(v), *dp = to_device(p);
  float* out = nullptr;
  CHECK(cudaMalloc(&out, kRows * kRows * sizeof(float)));
  std::printf("The kernels' reading:\n");
  const bool ok = run_reading(true, q, k, v, p, dq, dk, dv, dp, out);
  std::printf("%s\n", ok ? "wgmma probe: every product matched under the kernels' reading"
                          : "wgmma probe: MISMATCH under the kernels' reading");
  std::printf("The opposite reading (expected to mismatch, and it may fault):\n");
  std::fflush(stdout);
  run_reading(false, q, k, v, p, dq, dk, dv, dp, out);
  return ok ? 0 : 1;
}
