// CCQA's causal convolutions for one decode step of B rows (model/decode_conv.h wraps it): each
// row's output is the grouped convolution over its K-1 previous inputs (the history) and its new
// one, and the history moves on by one input where the row writes. One launch, where the
// unfused ops take five (the cat of history and input, a transposed copy for cuDNN, the
// convolution, its bias, the history's update). Launchers only: raw device pointers, sizes, an
// explicit stream.
//
// Arithmetic float32 (bias included), the output rounded once to `dtype`; cuDNN adds the bias
// to an output already rounded, so bf16 results differ from it by that rounding.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct DecodeConvShape {
  int rows = 0;        // B
  int channels = 0;    // C, in and out
  int group_size = 0;  // input channels a group (1: depthwise); output channel c reads group c / group_size
  int kernel = 0;      // K >= 1 taps
  StorageType dtype = StorageType::kBFloat16;
};

struct DecodeConvTensors {
  void* history = nullptr;     // [B, K-1, C] contiguous, oldest input first; updated in place
  const void* x = nullptr;     // the new inputs: element (b, c) at x + b * x_row_stride + c
  int64_t x_row_stride = 0;
  const void* weight = nullptr;  // [C, group_size, K] contiguous (torch's conv1d layout)
  const void* bias = nullptr;    // [C], or null
  const bool* write = nullptr;   // [B]: rows whose history moves on
  void* out = nullptr;           // [B, C] contiguous
};

// Whether the kernel takes the shape (a row's K x C inputs fit in 48 KiB of shared memory).
bool decode_conv_supported(const DecodeConvShape& shape);

void decode_conv_rows(const DecodeConvShape& shape, const DecodeConvTensors& tensors, cudaStream_t stream);

}  // namespace hydra::kernels
