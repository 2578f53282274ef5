// Fused rotate-half RoPE (docs/MODEL.md, "Notation"; model/layers.h apply_rope) over explicit
// positions, its inverse (the backward), the MQA query/key path RMSNorm-then-RoPE in one pass,
// and MLA's concatenation of a plain part with a rotated part. Launchers only: raw device pointers, sizes and an explicit stream; nothing here
// synchronises the stream. model/fused_ops.h wraps them in autograd Functions.
//
// Layout: x is `tokens` (B * S) contiguous tokens of `heads` heads of head_dim (even) elements;
// positions [tokens] int64 are the tokens' original positions (Mixture-of-Depths and MoR pass
// those of the selected tokens). Channel i < head_dim / 2 pairs with i + head_dim / 2 at
// angle = position * theta^(-2i / head_dim). Storage float32 or bfloat16, arithmetic float32;
// the angles are formed and reduced modulo 2 pi in float64 (positions reach 1e4 and more),
// then sincosf (not the fast intrinsic) on the reduced angle. No cos/sin tables in memory.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct RopeShape {
  int64_t tokens = 0;
  int heads = 0;
  int head_dim = 0;  // even
  double theta = 10000.0;
  StorageType dtype = StorageType::kBFloat16;
};

// out = (x1 cos - x2 sin, x2 cos + x1 sin). out may alias x.
void rope_forward(const RopeShape& shape, const void* x, const int64_t* positions, void* out, cudaStream_t stream);

// The backward: rotation by -angle, dx = (dy1 cos + dy2 sin, dy2 cos - dy1 sin). dx may alias dy.
void rope_backward(const RopeShape& shape, const void* dy, const int64_t* positions, void* dx, cudaStream_t stream);

// out = RoPE(rms_norm(x) * weight) per head, weight [head_dim] shared by the heads; rstd
// [tokens * heads] float32 for the backward. Rounds as the unfused ops do: the norm's output
// is rounded to the storage type before the rotation. Its backward is rope_backward followed
// by rms_norm_backward (rms_norm.h, weight gradient included) with rows = tokens * heads.
void rms_norm_rope_forward(const RopeShape& shape, float eps, const void* x, const void* weight,
                           const int64_t* positions, void* out, float* rstd, cudaStream_t stream);

// MLA's query and key assembly: out [tokens, heads, copy_dim + head_dim] = [a ; RoPE(b)] per head,
// a [tokens, heads, copy_dim] copied, b [tokens, b_heads, head_dim] rotated, with b_heads either
// `heads` or 1 (one rotated row shared by every head: MLA's decoupled key). Exact: the copy moves
// values, the rotation rounds once as rope_forward does.
struct RopeConcatShape {
  RopeShape rope;    // tokens, heads (of the output), head_dim (the rotated part), theta, dtype
  int copy_dim = 0;  // a's head size, the output's leading part (>= 0)
  int b_heads = 0;   // heads or 1
};

void rope_concat_forward(const RopeConcatShape& shape, const void* a, const void* b, const int64_t* positions,
                         void* out, cudaStream_t stream);

// Its backward: da = dout[..., :copy_dim]; db = the inverse rotation of dout[..., copy_dim:],
// summed over the heads (in head order, float32) when b_heads is 1.
void rope_concat_backward(const RopeConcatShape& shape, const void* dout, const int64_t* positions, void* da,
                          void* db, cudaStream_t stream);

}  // namespace hydra::kernels
