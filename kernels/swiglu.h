// The SwiGLU gate, silu(g) * u, elementwise, and its backward. Launchers only: raw device
// pointers, a count and an explicit stream; nothing here synchronises the stream.
// model/fused_ops.h wraps them in an autograd Function.
//
// g, u, out and the gradients are `count` contiguous elements, float32 or bfloat16; arithmetic
// float32 (expf, not the fast intrinsic). silu(g) is rounded to the storage type before the
// product, where the unfused ops hold it, so the kernels differ from them by the rounding of
// expf only.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

// out = silu(g) * u, silu(g) = g * sigmoid(g).
void swiglu_forward(int64_t count, StorageType dtype, const void* g, const void* u, void* out, cudaStream_t stream);

// dg = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))), du = dout * silu(g). dg may alias
// dout; du must not alias anything.
void swiglu_backward(int64_t count, StorageType dtype, const void* g, const void* u, const void* dout, void* dg,
                     void* du, cudaStream_t stream);

}  // namespace hydra::kernels
