// CCQA's causal convolutions for one decode step (launcher in decode_conv.h).
//
// Design invariants
// - One block a row: the row's K-1 history inputs and its new input go to shared memory
//   (float32) first, then every output channel is computed from there, then the history is
//   rewritten (shifted by one) where the row writes. A block reads and writes only its own
//   row, and the reads finish (a __syncthreads) before the writes: in place without a race.
// - Small by design: C x group_size x K multiply-adds a row (CCQA's latent channels), so the
//   launch, not the arithmetic, is the cost; the aim is one launch instead of five.
#include "kernels/decode_conv.h"

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxSharedFloats = 48 * 1024 / 4;

template <typename T>
__global__ void __launch_bounds__(kThreads) conv_rows_kernel(const DecodeConvShape s, const DecodeConvTensors t) {
  extern __shared__ float in[];  // [K][C]: history rows 0 .. K-2, the new input K-1
  const int b = blockIdx.x, C = s.channels, K = s.kernel, gs = s.group_size;
  T* history = static_cast<T*>(t.history) + static_cast<int64_t>(b) * (K - 1) * C;
  const T* x = static_cast<const T*>(t.x) + b * t.x_row_stride;
  for (int i = threadIdx.x; i < (K - 1) * C; i += kThreads) in[i] = vector_io::to_float(history[i]);
  for (int c = threadIdx.x; c < C; c += kThreads) in[(K - 1) * C + c] = vector_io::to_float(x[c]);
  __syncthreads();
  const T* w = static_cast<const T*>(t.weight);
  const T* bias = static_cast<const T*>(t.bias);
  T* out = static_cast<T*>(t.out) + static_cast<int64_t>(b) * C;
  for (int c = threadIdx.x; c < C; c += kThreads) {
    const int first = (c / gs) * gs;  // the group's first input channel
    float acc = bias != nullptr ? vector_io::to_float(bias[c]) : 0.f;
    for (int i = 0; i < gs; ++i) {
      for (int k = 0; k < K; ++k) acc = fmaf(vector_io::to_float(w[(c * gs + i) * K + k]), in[k * C + first + i], acc);
    }
    out[c] = vector_io::from_float<T>(acc);
  }
  if (!t.write[b]) return;
  for (int i = threadIdx.x; i < (K - 1) * C; i += kThreads) history[i] = vector_io::from_float<T>(in[i + C]);
}

}  // namespace

bool decode_conv_supported(const DecodeConvShape& s) {
  return s.rows >= 1 && s.channels >= 1 && s.group_size >= 1 && s.channels % s.group_size == 0 && s.kernel >= 1 &&
         s.kernel * s.channels <= kMaxSharedFloats;
}

void decode_conv_rows(const DecodeConvShape& s, const DecodeConvTensors& t, cudaStream_t stream) {
  HYDRA_CHECK(decode_conv_supported(s), "decode_conv_rows: unsupported shape (" << s.channels << " channels, groups of "
                                                                               << s.group_size << ", " << s.kernel
                                                                               << " taps)");
  const size_t smem = sizeof(float) * static_cast<size_t>(s.kernel) * s.channels;
  if (s.dtype == StorageType::kBFloat16) {
    conv_rows_kernel<vector_io::bf16><<<s.rows, kThreads, smem, stream>>>(s, t);
  } else {
    conv_rows_kernel<float><<<s.rows, kThreads, smem, stream>>>(s, t);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace hydra::kernels
