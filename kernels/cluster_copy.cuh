// Private to kernels/: PTX wrappers for two blocks of a thread-block cluster that share tiles
// (sm_90): the block's rank, a cluster-wide barrier, mbarriers that the other block arrives on,
// and bulk copies from global memory multicast into both blocks' shared memory. Used by the
// latent attention's cluster variants (latent_attention_cluster.cu, latent_attention_backward.cu);
// bench/probes/cluster_multicast_probe.cu first checked the mechanism alone.
#pragma once

#include <cstdint>

#include "kernels/latent_attention_common.cuh"

namespace hydra::kernels::detail {

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}

// This block's arrival on its own barrier, announcing `bytes` of bulk copies to complete on it.
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}

// An arrival on the barrier at bar's offset in block `rank` of the cluster (this block included).
__device__ __forceinline__ void mbar_arrive_in(uint64_t* bar, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smem_u32(bar)), "r"(rank));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// `bytes` (a multiple of 16) from src into dst in both blocks of the cluster, at dst's offset in
// each, completing on the barrier at bar's offset in each.
__device__ __forceinline__ void bulk_copy_to_pair(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], "
      "%4;\n" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "h"(static_cast<uint16_t>(0x3))
      : "memory");
}

}  // namespace hydra::kernels::detail
