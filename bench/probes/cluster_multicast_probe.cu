// A probe, not part of the build: checks on a GPU the mechanism that issue 15's next latent
// attention variant needs before it goes into the kernels. Two blocks of a 2-block cluster (two
// query heads of one KV group at the same query tile) read the same key and value tiles; instead
// of each block streaming both from L2, block 0 issues the key tile and block 1 the value tile,
// each as one bulk copy a row (cp.async.bulk ... .multicast::cluster, no tensor map needed) that
// lands in both blocks' shared memory at the same offset and completes on each block's own
// "full" mbarrier. Before a stage is loaded again, both blocks must have read it: each block
// arrives on its own and on its peer's "empty" mbarrier (mapa + a remote arrive), and the
// issuing thread waits for both arrivals. Two stages, padded rows (the kernels' [64][D + 8]
// tiles) and rows taken at an arbitrary row stride, as the kernels read [B, S, heads, D].
//
// Every element of every tile is checked against the value the host wrote there; the run also
// times the multicast loop against the same loop with each block loading both tiles itself.
//
// Result (H100, 2026-12-07, docs/PERF.md session 33): every element arrived in both blocks, and
// the multicast walk took 1.07x (D 16), 1.13x (D 32) and 1.22x (D 64) the time of the blocks'
// own loads: a bulk copy a row is a request a row, which multicast does not reduce. The latent
// attention variants built on it (474c50a, 68867dd) ran 1.5-2.5x slower and were removed.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -o /tmp/cluster_multicast_probe \
//        bench/probes/cluster_multicast_probe.cu
//   /tmp/cluster_multicast_probe        (exit 0: every element of every tile arrived in both blocks)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe_check.cuh"

namespace {

constexpr int kRows = 64;     // rows a tile (the kernels' kTile)
constexpr int kStages = 2;
constexpr int kThreads = 128;

__device__ uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

__device__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_address(bar)), "r"(count) : "memory");
}

// This thread's arrival, announcing `bytes` more to come from the bulk copies.
__device__ void mbar_arrive_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
}

// Arrival on the barrier at the same offset in block `rank` of the cluster (this block's own too).
__device__ void mbar_arrive_cluster(uint64_t* bar, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_address(bar)), "r"(rank));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}

__device__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}" ::"r"(smem_address(bar)),
      "r"(parity)
      : "memory");
}

// `bytes` from global src into dst in every block of `mask`, at dst's offset in each; completes
// on the barrier at bar's offset in each of them.
__device__ void bulk_copy_multicast(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;" ::
          "r"(smem_address(dst)),
      "l"(src), "r"(bytes), "r"(smem_address(bar)), "h"(mask)
      : "memory");
}

// Into this block only.
__device__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_address(dst)),
               "l"(src), "r"(bytes), "r"(smem_address(bar))
               : "memory");
}

template <int D>
struct Smem {
  __nv_bfloat16 k[kStages][kRows][D + 8];
  __nv_bfloat16 v[kStages][kRows][D + 8];
  uint64_t full[kStages];
  uint64_t empty[kStages];
};

// Each cluster walks `tiles` key/value tiles of 64 rows (row r of tile t at (t 64 + r) stride);
// every thread checks its elements of each stage against the pattern and counts mismatches.
// multicast: block 0 issues K's rows, block 1 V's, into both blocks; else each block issues both.
template <int D, bool kMulticast>
__global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(kThreads)
    walk_tiles(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t stride, int tiles, unsigned long long* bad,
               float* sink) {
  extern __shared__ __align__(128) unsigned char raw[];
  Smem<D>& sm = *reinterpret_cast<Smem<D>*>(raw);
  const uint32_t rank = cluster_rank();
  constexpr uint32_t kRowBytes = D * sizeof(__nv_bfloat16);
  constexpr uint32_t kStageBytes = 2 * kRows * kRowBytes;  // K and V, whoever issued them
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&sm.full[s], 1);                      // this block's expect_tx arrival
      mbar_init(&sm.empty[s], kMulticast ? 2 : 1);    // both blocks' consumers (or this one's)
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster_sync();
  // Issue tile t into stage t % kStages: one thread, one bulk copy a row (lanes could share this).
  const auto issue = [&](int t) {
    const int s = t % kStages;
    mbar_arrive_expect(&sm.full[s], kStageBytes);
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = static_cast<int64_t>(t) * kRows + r;
      if (kMulticast) {
        if (rank == 0) bulk_copy_multicast(sm.k[s][r], k + row * stride, kRowBytes, &sm.full[s], 0x3);
        else bulk_copy_multicast(sm.v[s][r], v + row * stride, kRowBytes, &sm.full[s], 0x3);
      } else {
        bulk_copy(sm.k[s][r], k + row * stride, kRowBytes, &sm.full[s]);
        bulk_copy(sm.v[s][r], v + row * stride, kRowBytes, &sm.full[s]);
      }
    }
  };
  if (threadIdx.x == 0) {
    for (int t = 0; t < kStages && t < tiles; ++t) issue(t);
  }
  unsigned long long mismatches = 0;
  float acc = 0.f;
  for (int t = 0; t < tiles; ++t) {
    const int s = t % kStages;
    mbar_wait(&sm.full[s], (t / kStages) & 1);
    for (int e = threadIdx.x; e < kRows * D; e += kThreads) {
      const int r = e / D, c = e % D;
      const int64_t row = static_cast<int64_t>(t) * kRows + r;
      const float kk = __bfloat162float(sm.k[s][r][c]), vv = __bfloat162float(sm.v[s][r][c]);
      // The host's pattern: small integers, exact in bf16.
      const float want_k = static_cast<float>((row * 7 + c) % 251), want_v = static_cast<float>((row * 3 + c * 5) % 241);
      mismatches += (kk != want_k) + (vv != want_v);
      acc += kk * vv;
    }
    __syncthreads();  // every thread of this block has read stage s
    if (threadIdx.x == 0) {
      if (kMulticast) {
        mbar_arrive_cluster(&sm.empty[s], 0);
        mbar_arrive_cluster(&sm.empty[s], 1);
      } else {
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_address(&sm.empty[s])) : "memory");
      }
      if (t + kStages < tiles) {
        mbar_wait(&sm.empty[s], (t / kStages) & 1);  // both blocks done with the stage
        issue(t + kStages);
      }
    }
  }
  atomicAdd(bad, mismatches);
  sink[blockIdx.x * kThreads + threadIdx.x] = acc;
  cluster_sync();  // no block leaves while its peer may still arrive on its barriers
}

template <int D>
bool run(int tiles, int clusters) {
  const int64_t stride = D + 24;  // rows of a wider [S, heads, D] tensor, 16-byte multiples
  const int64_t rows = static_cast<int64_t>(tiles) * kRows;
  std::vector<__nv_bfloat16> hk(rows * stride), hv(rows * stride);
  for (int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < stride; ++c) {
      hk[r * stride + c] = __float2bfloat16(c < D ? static_cast<float>((r * 7 + c) % 251) : -1.f);
      hv[r * stride + c] = __float2bfloat16(c < D ? static_cast<float>((r * 3 + c * 5) % 241) : -1.f);
    }
  }
  __nv_bfloat16 *dk, *dv;
  unsigned long long* dbad;
  float* sink;
  CHECK(cudaMalloc(&dk, hk.size() * sizeof(hk[0])));
  CHECK(cudaMalloc(&dv, hv.size() * sizeof(hv[0])));
  CHECK(cudaMalloc(&dbad, sizeof(unsigned long long)));
  CHECK(cudaMalloc(&sink, sizeof(float) * 2 * clusters * kThreads));
  CHECK(cudaMemcpy(dk, hk.data(), hk.size() * sizeof(hk[0]), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dv, hv.data(), hv.size() * sizeof(hv[0]), cudaMemcpyHostToDevice));
  const int smem = static_cast<int>(sizeof(Smem<D>));
  bool ok = true;
  float ms[2] = {0, 0};
  for (const bool multicast : {true, false}) {
    const auto kernel = multicast ? walk_tiles<D, true> : walk_tiles<D, false>;
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    CHECK(cudaMemset(dbad, 0, sizeof(unsigned long long)));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    kernel<<<2 * clusters, kThreads, smem>>>(dk, dv, stride, tiles, dbad, sink);  // warm-up and check
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    unsigned long long bad = 0;
    CHECK(cudaMemcpy(&bad, dbad, sizeof(bad), cudaMemcpyDeviceToHost));
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < 10; ++i) kernel<<<2 * clusters, kThreads, smem>>>(dk, dv, stride, tiles, dbad, sink);
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms[multicast ? 0 : 1] = t / 10;
    std::printf("D %d, %d tiles, %d clusters, %s: %llu mismatched elements, %.3f ms a walk\n", D, tiles, clusters,
                multicast ? "multicast (each block issues one tile)" : "each block loads both tiles", bad, t / 10);
    ok = ok && bad == 0;
  }
  std::printf("D %d: multicast / own loads = %.2f\n", D, ms[0] / ms[1]);
  CHECK(cudaFree(dk));
  CHECK(cudaFree(dv));
  CHECK(cudaFree(dbad));
  CHECK(cudaFree(sink));
  return ok;
}

}  // namespace

int main() {
  // Every cluster walks the same tiles (as the query-head pairs of one KV head do), so the
  // timing sees L2 traffic like the kernels'; 66 clusters: one a pair of H100/H200 SMs.
  bool ok = run<16>(128, 66);
  ok = run<32>(128, 66) && ok;
  ok = run<64>(128, 66) && ok;
  std::printf(ok ? "every element arrived in both blocks\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
