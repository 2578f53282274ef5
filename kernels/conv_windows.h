// CCQA's first causal convolution (depthwise, docs/MODEL.md CCQA step 3) fused with the
// unfolding of its output into the K-tap windows that the second, grouped convolution reads
// as one matrix product per group (model/causal_conv_products.h). Where the unfused ops take
// a pad, a view, a product, a sum over taps, a bias and a second pad with a copy (and the
// backward as many again, the unfold's backward among them), this is one kernel each way plus
// a small deterministic reduction of the weight gradient. Launchers only: raw device pointers,
// sizes, an explicit stream; nothing here synchronises it.
//
// Definitions (b a sequence, t a token, c a channel, m and n taps 0..K-1):
//   y[b, s, c]          = bias[c] + sum_n w[c, n] x[b, s - K + 1 + n, c]   for s >= 0 (x before 0 is zero)
//   windows[b, t, c, m] = y[b, t - K + 1 + m, c], zero where t - K + 1 + m < 0
// (the second convolution pads its input with zeros, not with conv1's bias). Arithmetic in
// float32; y is rounded once to the storage type, as the unfused ops store conv1's output.
//
// Layout: the windows are stored as conv2's left operand, [C / g, B S, row] for conv2's groups
// of g channels: group j's rows are its tokens, a row holding (i, m) at i K + m for the group's
// channel i, then `bias_columns` entries of 1 / bias_columns each (0 or 8: against conv2's
// bias repeated in as many weight rows, the product adds the bias and its weight gradient is
// the bias's gradient, where a separate add and a reduction over tokens would take two
// kernels; 8 keeps rows of 16-byte multiples). The gradient comes back in the same layout.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct ConvWindowsShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int channels = 0;
  int kernel = 0;                                     // K: 1 to 4
  int group_size = 1;                                 // g of conv2: channels a group, divides C
  int bias_columns = 0;                               // 0 or 8 (see above)
  StorageType dtype = StorageType::kBFloat16;        // x, windows, their gradients
  StorageType param_dtype = StorageType::kFloat32;   // w [C, 1, K], bias [C], their gradients
};

bool conv_windows_supported(const ConvWindowsShape& shape);

// x: element (b, s, c) at x + (b S + s) x_row_stride + c (a column block of a wider product
// is fine); windows [C / g, B S, g K + bias_columns] contiguous.
void conv_windows_forward(const ConvWindowsShape& shape, const void* x, int64_t x_row_stride, const void* weight,
                          const void* bias, void* windows, cudaStream_t stream);

// Bytes of float32 workspace the backward needs (per-tile partial sums of the parameters'
// gradients); its contents on entry do not matter.
size_t conv_windows_backward_workspace(const ConvWindowsShape& shape);

// From the windows' gradient (their layout; the bias columns are not read): dx [B, S, C]
// contiguous, and the weight and bias gradients (overwritten), summed over the tiles in a fixed
// order: bitwise reproducible.
void conv_windows_backward(const ConvWindowsShape& shape, const void* dwindows, const void* x, int64_t x_row_stride,
                           const void* weight, void* dx, void* dweight, void* dbias, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream);

}  // namespace hydra::kernels
