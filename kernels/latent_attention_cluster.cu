// The latent attention forward with its key and value tiles shared by the two query heads of a
// 2-block cluster (LatentAttentionVariant::fwd_cluster; issue 15). The mma.sync forward
// (latent_attention.cu, whose invariants hold here) streams each key/value tile from L2 once per
// query head; at d 32 that is 8 KB a 64 x 64 tile of scores, about what L2 can deliver to an SM
// in the time of the tile's 4096 exponentials, and ncu found the forward's L2 82% busy (session
// 30). Here the two blocks of a cluster are query heads h and h + 1 of one KV group at the same
// query tile: block 0 issues the key tile and block 1 the value tile, each row one bulk copy
// (cp.async.bulk ... multicast::cluster) that lands in both blocks' shared memory, so each tile
// crosses from L2 once per pair. What differs from the default forward:
// - Stages: kStages key/value buffers with a "full" mbarrier each (this block's expect_tx; the
//   peer's multicast rows may complete before it, which the transaction count allows) and an
//   "empty" mbarrier each that the 4 warps of both blocks arrive on (8 arrivals) once they have
//   read the stage. No __syncthreads in the loop: warps wait on barriers only.
// - Warp 0 issues: at tile j it waits until both blocks have released tile j - 1's stage, then its
//   32 lanes issue tile j + kStages - 1's rows into it.
// - Rows past S are copied from row S - 1 (bulk copies cannot zero-fill): those keys come after
//   every valid query, so the causal mask gives them probability 0 and their finite values add
//   nothing. The value shift's row -1 (zero) is written once, before the loop, and never copied.
// - The grid and block order are forward_block's: consecutive blocks are heads h, h + 1 of the
//   same (query tile, sequence) when H is even, and of one KV group when G is even (checked).
// The mechanism was first checked alone by bench/probes/cluster_multicast_probe.cu.
#include "kernels/cluster_copy.cuh"
#include "kernels/latent_attention_common.cuh"

namespace hydra::kernels::detail {
namespace {

constexpr int kThreads = threads_for(1);  // 4 warps, one m-tile of 16 queries each
constexpr int kWarps = kThreads / 32;

template <int D, int kStages>
struct ClusterSmem {
  bf16 q[kTile][D + kPad];
  bf16 k[kStages][kTile][D + kPad];
  bf16 v[kStages][kTile][D + kPad];
  uint64_t full[kStages];
  uint64_t empty[kStages];
};

// Bytes that arrive in each block for key/value tile t: K and V rows, less the value shift's
// half-row before the sequence, which is never copied.
template <int D>
__device__ __forceinline__ uint32_t tile_bytes(int t, bool shift) {
  return 2u * kTile * D * sizeof(bf16) - (shift && t == 0 ? D / 2 * sizeof(bf16) : 0u);
}

// Warp 0 of block `rank`: its share of key/value tile t into stage st of both blocks (rank 0 the
// key rows, rank 1 the value rows; lane l takes rows l and l + 32), after announcing the tile's
// bytes on this block's full barrier.
template <int D, int kStages>
__device__ __forceinline__ void issue_tile(ClusterSmem<D, kStages>& sm, const FwdParams& p, const bf16* k,
                                           const bf16* v, uint32_t rank, int t, int st, int lane) {
  if (lane == 0) mbar_arrive_expect(&sm.full[st], tile_bytes<D>(t, p.value_shift));
  __syncwarp();
  constexpr uint32_t kRow = D * sizeof(bf16), kHalf = kRow / 2;
  for (int r = lane; r < kTile; r += 32) {
    const int row = min(t * kTile + r, p.seq - 1);
    if (rank == 0) {
      bulk_copy_to_pair(sm.k[st][r], k + static_cast<int64_t>(row) * p.ks.s, kRow, &sm.full[st]);
    } else if (!p.value_shift) {
      bulk_copy_to_pair(sm.v[st][r], v + static_cast<int64_t>(row) * p.vs.s, kRow, &sm.full[st]);
    } else {
      // Row r: channels [0, D/2) from its own row, [D/2, D) from the row before.
      const bf16* own = v + static_cast<int64_t>(row) * p.vs.s;
      bulk_copy_to_pair(sm.v[st][r], own, kHalf, &sm.full[st]);
      const int before = min(t * kTile + r, p.seq) - 1;
      if (before >= 0) {
        bulk_copy_to_pair(&sm.v[st][r][D / 2], v + static_cast<int64_t>(before) * p.vs.s + D / 2, kHalf,
                          &sm.full[st]);
      }
    }
  }
}

template <int D, int kStages, int kMinBlocks>
__global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(kThreads, kMinBlocks)
    forward_cluster_kernel(const FwdParams p) {
  __shared__ __align__(128) ClusterSmem<D, kStages> sm;
  constexpr int W = D + kPad;
  const auto [qt, h, b, hk] = forward_block(p.seq, p.heads, p.group, false);
  const uint32_t rank = cluster_rank();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bf16* q = p.q + b * p.qs.b + h * p.qs.h;
  const bf16* k = p.k + b * p.ks.b + hk * p.ks.h;
  const bf16* v = p.v + b * p.vs.b + hk * p.vs.h;
  const int row_base = warp * 16;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&sm.full[s], 1);
      mbar_init(&sm.empty[s], 2 * kWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  load_tile<D, kThreads>(sm.q, q, p.qs.s, qt * kTile, p.seq);
  cp_async_commit();
  if (p.value_shift && threadIdx.x < D / 16) {
    // Row -1 of the shift, in stage 0 (tile 0's); made visible to the bulk copies that later
    // fill the stage again (they are ordered after it through the empty barrier).
    *reinterpret_cast<uint4*>(&sm.v[0][0][D / 2 + 8 * threadIdx.x]) = make_uint4(0, 0, 0, 0);
    fence_proxy_async_shared();
  }
  cluster_sync();  // both blocks' barriers initialised before either copies into or arrives on them
  if (warp == 0) {
    for (int t = 0; t < kStages - 1 && t <= qt; ++t) issue_tile(sm, p, k, v, rank, t, t, lane);
  }
  cp_async_wait_all();
  __syncthreads();  // the query tile

  uint32_t qf[1][D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) a_frag<W>(qf[0][kc], sm.q, row_base, kc * 16, lane);
  float o[1][D / 8][4];
  float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[0][i][0] = o[0][i][1] = o[0][i][2] = o[0][i][3] = 0.f;
  int pos[1][2];
  row_positions<1>(pos, qt, row_base, lane);

  for (int j = 0; j <= qt; ++j) {
    const int st = j % kStages;
    // Tile j + kStages - 1 goes where tile j - 1 was, once both blocks have read that.
    const int next = j + kStages - 1;
    if (warp == 0 && next <= qt) {
      const int free_st = next % kStages;
      if (j > 0) mbar_wait(&sm.empty[free_st], ((j - 1) / kStages) & 1);
      issue_tile(sm, p, k, v, rank, next, free_st, lane);
    }
    mbar_wait(&sm.full[st], (j / kStages) & 1);

    float s[1][8][4];
    raw_scores<D, 1>(s, qf, sm.k[st], lane);
    int lim[1][2];
    tile_limits<1>(lim, pos, j);
    if (D < 64 && j < qt) {
      online_softmax<D, 1, false>(s, o, m, l, p.scale_log2, lim, lane);
    } else {
      online_softmax<D, 1, true>(s, o, m, l, p.scale_log2, lim, lane);
    }
    add_probs_times_values<D, 1>(o, s, sm.v[st], lane);
    __syncwarp();
    if (lane < 2) mbar_arrive_in(&sm.empty[st], lane);  // this warp is done with the stage, in both blocks
  }

  write_rows_out<D, 1>(p, o, m, l, qt, h, b, row_base, lane);
  cluster_sync();  // neither block leaves while the other may still arrive on its barriers
}

template <int D, int kStages, int kMinBlocks>
void launch(const LatentAttentionShape& x, const FwdParams& p, cudaStream_t stream) {
  forward_cluster_kernel<D, kStages, kMinBlocks><<<forward_grid(x), kThreads, 0, stream>>>(p);
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace

bool forward_cluster_fits(const LatentAttentionShape& x, bool tiles_inner) {
  return !tiles_inner && x.heads % 2 == 0 && (x.heads / x.kv_heads) % 2 == 0;
}

void forward_cluster(const LatentAttentionShape& x, const FwdParams& p, int stages, cudaStream_t stream) {
  HYDRA_CHECK(forward_cluster_fits(x, p.tiles_inner),
              "fwd_cluster: the query heads of a KV group pair up (group " << x.heads / x.kv_heads
                                                                           << " must be even, tiles_inner off)");
  // Register caps as the default forward's (fwd_min_blocks): 5 blocks an SM at d 32, 4 at d 64.
  switch (x.head_dim * 10 + stages) {
    case 162: return launch<16, 2, 0>(x, p, stream);
    case 163: return launch<16, 3, 0>(x, p, stream);
    case 322: return launch<32, 2, 5>(x, p, stream);
    case 323: return launch<32, 3, 5>(x, p, stream);
    case 642: return launch<64, 2, 4>(x, p, stream);
  }
  HYDRA_FAIL(::hydra::common::RuntimeFailure,
             "fwd_cluster: no kernel built for d " << x.head_dim << " with " << stages << " stages (built: 2 or 3 at d 16 "
                                                   "and 32, 2 at d 64)");
}

}  // namespace hydra::kernels::detail
