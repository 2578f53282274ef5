// Latent flash attention: causal grouped-query attention at CCQA's latent head sizes, forward
// and backward, for bf16 tensors on the GPU. Launchers only: raw device pointers, sizes,
// element strides and an explicit stream; nothing here synchronises the stream.
//
// Layout [B, S, heads, D] (as model/attention_core.h): q and out have H heads, k and v H_kv
// heads; query head h uses key/value head h / (H / H_kv). D is contiguous (stride 1), every
// other stride is a multiple of 8 elements and every base pointer is 16-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace hydra::kernels {

struct LatentAttentionShape {
  int batch = 0;
  int seq = 0;
  int heads = 0;     // H (query heads)
  int kv_heads = 0;  // H_kv, divides H
  int head_dim = 0;  // D: 16, 32 or 64
  // CCQA's value shift applied as the values are read (docs/MODEL.md): v holds x W_v, and the
  // second half of each head's channels of key position j is read from position j - 1 (zero at
  // j = 0); the backward's dv is the gradient of that unshifted v. Saves the shift's own pass and
  // its transpose (two kernels a layer).
  bool value_shift = false;
};

// A [B, S, heads, D] bf16 tensor in device memory: base pointer and element strides.
struct BshdConst {
  const __nv_bfloat16* data = nullptr;
  int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;
};
struct BshdMut {
  __nv_bfloat16* data = nullptr;
  int64_t batch_stride = 0, seq_stride = 0, head_stride = 0;
};

// Rows of 16 per warp (1 or 2) of the forward (queries) and the backward (keys); 0 takes the
// default for the head size (the backward's: and the length). Two rows per warp halve
// shared-memory reads per score at the cost of registers and warps in flight. For the dev
// benchmark; the model uses the defaults.
// tiles_inner: the block order of before 2026-12-03 (the tiles of one (head, batch) one after
// another, longest first only among them) instead of the longest tiles first across the grid.
// bwd_head_split: the backward's blocks split the G query heads of a KV head into this many
// slices (a divisor of G; 0 takes latent_attention_backward_head_split's choice). With s > 1
// each slice sums its own fp32 dk, dv partials and a second pass adds the s partials in a fixed
// order (deterministic): more blocks of shorter chains, for grids too small to fill the GPU.
// wgmma_forward, wgmma_backward: the forward, the backward's main kernel on Hopper's warpgroup MMA
// (latent_attention_wgmma.cu), the first step of the move off mma.sync; right, but slower than
// the mma.sync kernels on an H100 (docs/PERF.md, sessions 28 and 29), so not the default. (The
// backward's head split is still chosen for the mma.sync kernel's occupancy.)
struct LatentAttentionVariant {
  int fwd_mtiles = 0;
  int bwd_mtiles = 0;
  bool tiles_inner = false;
  int bwd_head_split = 0;
  bool wgmma_forward = false;
  bool wgmma_backward = false;
  // The forward's registers capped for this many resident blocks a multiprocessor, at one row
  // tile a warp and d 16 or 32 (5 or 6 built): occupancy against spills. 0 takes the default for
  // the head size (5 at d 32, where the compiler chose up to 128 registers; 4 at d 64, what its
  // shared memory allows; at d 16 none), -1 the compiler's own choice.
  int fwd_min_blocks = 0;
  // The forward's exponentials on the FMA pipes for this many of a key tile's 8 groups of 8 keys
  // (1: an eighth, 2: a quarter), the rest on the special-function unit: issue 15's softmax past
  // the SFU's peak. Built at d 16 and 32 with the default blocks; 0: none. No faster on an H100
  // (docs/PERF.md, 2026-12-06, session 29): the SFU pipe is 37-43% busy there, not what binds;
  // kept for a kernel whose exponentials do bind.
  int fwd_poly_exp = 0;
};

// True when the kernels handle this head size.
bool latent_attention_supports(int head_dim);

// The layout rule above, for a caller that would rather pass a tensor as it is than copy it (the
// launchers check the same): the base pointer 16-byte aligned, the batch, sequence and head
// strides multiples of 8 elements.
inline bool latent_attention_aligned(const void* data) { return reinterpret_cast<uintptr_t>(data) % 16 == 0; }
inline bool latent_attention_strides_ok(int64_t batch_stride, int64_t seq_stride, int64_t head_stride) {
  return batch_stride % 8 == 0 && seq_stride % 8 == 0 && head_stride % 8 == 0;
}

// out = softmax(scale * q k^T, causal) v per head; lse [B, H, S] fp32 (contiguous) receives the
// natural log of each query row's softmax denominator, the state the backward needs.
void latent_attention_forward(const LatentAttentionShape& shape, float scale, BshdConst q, BshdConst k,
                              BshdConst v, BshdMut out, float* lse, cudaStream_t stream,
                              const LatentAttentionVariant& variant = {});

// The backward's head split on the current device when the variant leaves it open: the
// smallest divisor s of G for which the longest block's chain of steps (key tile 0: S / 64
// query tiles times G / s heads) is at most the steps an SM's block slot gets on average (all
// steps over SMs x resident blocks). 1 whenever the grid is large enough.
int latent_attention_backward_head_split(const LatentAttentionShape& shape, const LatentAttentionVariant& variant = {});

// Bytes of device workspace the backward needs with this variant (fp32 dq accumulator, row
// sums, and under a head split the slices' fp32 dk, dv partials).
size_t latent_attention_backward_workspace(const LatentAttentionShape& shape, const LatentAttentionVariant& variant = {});

// dq [B, S, H, D], dk and dv [B, S, H_kv, D] (dk, dv summed over the query heads of each
// group) from the forward's inputs, out, lse and the output gradient dout. workspace holds
// workspace_bytes >= latent_attention_backward_workspace(shape, variant) bytes (checked),
// 16-byte aligned; its contents on entry do not matter.
void latent_attention_backward(const LatentAttentionShape& shape, float scale, BshdConst q, BshdConst k,
                               BshdConst v, BshdConst out, BshdConst dout, const float* lse, BshdMut dq,
                               BshdMut dk, BshdMut dv, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                               const LatentAttentionVariant& variant = {});

}  // namespace hydra::kernels
