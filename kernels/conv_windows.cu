// conv1 (depthwise, causal) with its output unfolded into conv2's windows: forward and backward
// (definitions in conv_windows.h).
//
// Forward: a thread per (token, channel) reads the 2K-1 inputs its K windows need (neighbouring
// tokens' threads read the same ones: L1 serves them) and writes its K window values
// contiguously, so a warp's stores cover one contiguous span of a row; the first bias_columns
// threads of a group also write the row's bias columns. Where groups hold a multiple of 8
// channels, a thread takes 8 of them instead and moves 16 bytes an access.
//
// Backward: a thread per (channel, tile of TT tokens of one sequence; TT small, so that there
// are many threads to hide the loads' latency) walks its tokens in order
// with the last K values of conv1's output gradient and of x in registers:
//   dy[s] = sum_m dwindows[s + K - 1 - m, m]   (window rows past the sequence's end are absent)
//   dx[u] = sum_n w[n] dy[u + K - 1 - n]       (dy past the end is zero)
//   dw[n] += dy[s] x[s - K + 1 + n],  dbias += dy[s]   over the tile's own s
// so each gradient element is written once and the parameters' partial sums go to the tile's
// row of the workspace; a second kernel adds the rows in order (no atomics: reproducible).
#include "kernels/conv_windows.h"

#include <algorithm>
#include <type_traits>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::from_float;
using vector_io::to_float;

constexpr int kMaxKernel = 4;
constexpr int kBackwardThreads = 128;  // channels a backward block

// Where (token tok, channel c, tap m) of the windows lives: [C / g, tokens, row].
struct WindowsLayout {
  int64_t tokens;
  int g, row;
  __device__ __forceinline__ int64_t at(int64_t tok, int c, int m, int K) const {
    return (static_cast<int64_t>(c / g) * tokens + tok) * row + (c % g) * K + m;
  }
};

// conv1's output at the K window taps of token t (tap m is y at t - K + 1 + m) for channel c,
// from the 2K-1 inputs x at t - 2(K-1) + j, found at xv[j STRIDE]; zero before the sequence.
template <int K, int STRIDE, typename P>
__device__ __forceinline__ void window_taps(const float* xv, const P* w, const P* bias, int c, int t,
                                            float (&y)[K]) {
  float wc[K];
#pragma unroll
  for (int j = 0; j < K; ++j) wc[j] = to_float(w[c * K + j]);
  const float b = to_float(bias[c]);
#pragma unroll
  for (int m = 0; m < K; ++m) {
    // y at s = t - K + 1 + m reads x at s - K + 1 + j, i.e. xv[m + j].
    y[m] = 0.f;
    if (t - (K - 1) + m >= 0) {
      y[m] = b;
#pragma unroll
      for (int j = 0; j < K; ++j) y[m] += wc[j] * xv[(m + j) * STRIDE];
    }
  }
}

template <typename T, typename P, int K>
__global__ void windows_forward_kernel(int S, int C, int bias_columns, const T* x, int64_t x_stride, const P* w,
                                       const P* bias, WindowsLayout L, T* out) {
  const int64_t n = L.tokens * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tok = i / C;
    const int c = static_cast<int>(i % C);
    const int t = static_cast<int>(tok % S);
    // xv[i] = x at token t - 2(K-1) + i (zero before the sequence's start).
    float xv[2 * K - 1];
#pragma unroll
    for (int j = 0; j < 2 * K - 1; ++j) {
      const int back = 2 * (K - 1) - j;
      xv[j] = t >= back ? to_float(x[(tok - back) * x_stride + c]) : 0.f;
    }
    float y[K];
    window_taps<K, 1>(xv, w, bias, c, t, y);
    T* o = out + L.at(tok, c, 0, K);
#pragma unroll
    for (int m = 0; m < K; ++m) o[m] = from_float<T>(y[m]);
    const int i_in_group = c % L.g;
    if (i_in_group < bias_columns) {
      out[L.at(tok, c - i_in_group, 0, K) + L.g * K + i_in_group] = from_float<T>(1.f / bias_columns);
    }
  }
}

// The same, 8 channels of one group a thread (groups of a multiple of 8 channels): its 8 K
// window values are contiguous in a row, written as 16-byte stores; with X_VEC (bf16 x whose
// rows are 16-byte aligned) the inputs come as 16-byte loads too.
constexpr int kVec = 8;
template <typename T, typename P, int K, bool X_VEC>
__global__ void windows_forward_vec_kernel(int S, int C, int bias_columns, const T* x, int64_t x_stride, const P* w,
                                           const P* bias, WindowsLayout L, T* out) {
  constexpr int ST = 16 / sizeof(T);  // elements a 16-byte store
  const int CV = C / kVec;
  const int64_t n = L.tokens * CV;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tok = i / CV;
    const int c0 = static_cast<int>(i % CV) * kVec;
    const int t = static_cast<int>(tok % S);
    float xv[2 * K - 1][kVec];
#pragma unroll
    for (int j = 0; j < 2 * K - 1; ++j) {
      const int back = 2 * (K - 1) - j;
      const T* row = x + (tok - back) * x_stride + c0;
      if (t < back) {
#pragma unroll
        for (int v = 0; v < kVec; ++v) xv[j][v] = 0.f;
      } else if constexpr (X_VEC) {
        vector_io::load<T, kVec>(row, xv[j]);
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) xv[j][v] = to_float(row[v]);
      }
    }
    float o[kVec * K];
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      float y[K];
      window_taps<K, kVec>(&xv[0][v], w, bias, c0 + v, t, y);
#pragma unroll
      for (int m = 0; m < K; ++m) o[v * K + m] = y[m];
    }
    T* dst = out + L.at(tok, c0, 0, K);
#pragma unroll
    for (int q = 0; q < kVec * K / ST; ++q) {
      float chunk[ST];
#pragma unroll
      for (int e = 0; e < ST; ++e) chunk[e] = o[q * ST + e];
      vector_io::store<T, ST>(dst + q * ST, chunk);
    }
    if (bias_columns > 0 && c0 % L.g == 0) {  // the group's first thread: its row's bias columns
      float ones[ST];
#pragma unroll
      for (int e = 0; e < ST; ++e) ones[e] = 1.f / bias_columns;
      for (int q = 0; q < bias_columns / ST; ++q) vector_io::store<T, ST>(dst + L.g * K + q * ST, ones);
    }
  }
}

template <typename T, typename P, int K>
__global__ void __launch_bounds__(kBackwardThreads) windows_backward_kernel(int S, int C, int TT, int n_tiles,
                                                                            const T* dwin, WindowsLayout L, const T* x,
                                                                            int64_t x_stride, const P* w, T* dx,
                                                                            float* ws) {
  const int c = blockIdx.y * kBackwardThreads + threadIdx.x;
  if (c >= C) return;
  const int row = blockIdx.x;  // (sequence, tile)
  const int64_t b = row / n_tiles;
  const int t0 = (row % n_tiles) * TT, t1 = min(t0 + TT, S);
  const int64_t base = b * S;
  float wc[K];
#pragma unroll
  for (int j = 0; j < K; ++j) wc[j] = to_float(w[c * K + j]);
  // After step s: dyw[j] = dy at s - (K-1) + j, xw[j] = x at s - (K-1) + j. Before the first
  // step, xw holds the state after step t0 - 1 (x at t0 - K + j; the shift drops j = 0); dy
  // before t0 is never read.
  float dyw[K], xw[K], dw[K], db = 0.f;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    dyw[j] = 0.f;
    dw[j] = 0.f;
    const int s = t0 - K + j;
    xw[j] = (j > 0 && s >= 0) ? to_float(x[(base + s) * x_stride + c]) : 0.f;
  }
  for (int s = t0; s < t1 + K - 1; ++s) {
    float dy = 0.f;
    if (s < S) {
#pragma unroll
      for (int m = 0; m < K; ++m) {
        const int t = s + K - 1 - m;  // the window row whose tap m is y[s]
        if (t < S) dy += to_float(dwin[L.at(base + t, c, m, K)]);
      }
    }
#pragma unroll
    for (int j = 0; j < K - 1; ++j) dyw[j] = dyw[j + 1];
    dyw[K - 1] = dy;
    if (s < t1) {
#pragma unroll
      for (int j = 0; j < K - 1; ++j) xw[j] = xw[j + 1];
      xw[K - 1] = to_float(x[(base + s) * x_stride + c]);
#pragma unroll
      for (int n = 0; n < K; ++n) dw[n] += dy * xw[n];
      db += dy;
    }
    const int u = s - (K - 1);  // every dy that dx[u] reads is in the window now
    if (u >= t0) {
      float acc = 0.f;
#pragma unroll
      for (int n = 0; n < K; ++n) acc += wc[n] * dyw[K - 1 - n];
      dx[(base + u) * C + c] = from_float<T>(acc);
    }
  }
  float* out = ws + (static_cast<int64_t>(row) * C + c) * (K + 1);
#pragma unroll
  for (int n = 0; n < K; ++n) out[n] = dw[n];
  out[K] = db;
}

// Sums the rows' partials: dweight [C, K], dbias [C]. A block takes 32 outputs (a warp's
// coalesced loads along a row) and kSlices interleaved subsets of the rows; each thread sums
// its subset in order, then the subsets are added in order: a fixed order for any grid.
constexpr int kSlices = 16;
template <typename P>
__global__ void __launch_bounds__(32 * kSlices) reduce_partials_kernel(const float* ws, int rows, int C, int K,
                                                                       P* dweight, P* dbias) {
  __shared__ float s_sum[kSlices][32];
  const int per = K + 1;
  const int e = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (e < C * per) {
    for (int r = threadIdx.y; r < rows; r += kSlices) s += ws[static_cast<int64_t>(r) * C * per + e];
  }
  s_sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || e >= C * per) return;
  float total = 0.f;
  for (int y = 0; y < kSlices; ++y) total += s_sum[y][threadIdx.x];
  const int c = e / per, j = e % per;
  if (j < K) dweight[c * K + j] = from_float<P>(total);
  else dbias[c] = from_float<P>(total);
}

// Tokens a backward thread walks: 8, doubled while there are more than 1024 tiles to reduce.
struct BackwardTiles {
  int TT = 8, n_tiles = 0;
  int64_t rows = 0;
};
BackwardTiles backward_tiles(const ConvWindowsShape& s) {
  BackwardTiles t;
  const auto count = [&] {
    t.n_tiles = static_cast<int>((s.seq + t.TT - 1) / t.TT);
    t.rows = s.batch * t.n_tiles;
  };
  count();
  while (t.rows > 1024 && t.TT < (1 << 20)) {
    t.TT *= 2;
    count();
  }
  return t;
}

// f(K, TypeTag<T>, TypeTag<P>) for the shape's kernel size and storage types.
template <typename F>
void dispatch(const ConvWindowsShape& s, F&& f) {
  vector_io::with_storage_types(s.dtype, s.param_dtype, [&](auto t, auto p) {
    switch (s.kernel) {
      case 1: return f(std::integral_constant<int, 1>{}, t, p);
      case 2: return f(std::integral_constant<int, 2>{}, t, p);
      case 3: return f(std::integral_constant<int, 3>{}, t, p);
      case 4: return f(std::integral_constant<int, 4>{}, t, p);
      default: HYDRA_FAIL(common::RuntimeFailure, "conv windows: kernel size " << s.kernel);
    }
  });
}

WindowsLayout layout_of(const ConvWindowsShape& s) {
  return {s.batch * s.seq, s.group_size, s.group_size * s.kernel + s.bias_columns};
}

}  // namespace

bool conv_windows_supported(const ConvWindowsShape& s) {
  return s.batch > 0 && s.seq > 0 && s.seq < (1LL << 30) && s.channels > 0 && s.kernel >= 1 &&
         s.kernel <= kMaxKernel && s.group_size >= 1 && s.channels % s.group_size == 0 &&
         (s.bias_columns == 0 || s.bias_columns == 8) && s.bias_columns <= s.group_size &&
         (s.channels + kBackwardThreads - 1) / kBackwardThreads <= 65535;
}

void conv_windows_forward(const ConvWindowsShape& s, const void* x, int64_t x_row_stride, const void* weight,
                          const void* bias, void* windows, cudaStream_t stream) {
  HYDRA_CHECK(conv_windows_supported(s), "conv windows: unsupported shape");
  // 8 channels a thread where a group holds a multiple of 8 (rows then start 16-byte aligned).
  const bool vec = s.group_size % kVec == 0 && vector_io::aligned16(windows);
  const int64_t n = s.batch * s.seq * s.channels / (vec ? kVec : 1);
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 1 << 16));
  dispatch(s, [&](auto k, auto t, auto p) {
    using T = typename decltype(t)::type;
    using P = typename decltype(p)::type;
    if (vec) {
      const bool x_vec = std::is_same_v<T, bf16> && vector_io::aligned16(x) && x_row_stride % kVec == 0;
      auto kernel = x_vec ? windows_forward_vec_kernel<T, P, decltype(k)::value, true>
                          : windows_forward_vec_kernel<T, P, decltype(k)::value, false>;
      kernel<<<blocks, 256, 0, stream>>>(static_cast<int>(s.seq), s.channels, s.bias_columns, static_cast<const T*>(x),
                                         x_row_stride, static_cast<const P*>(weight), static_cast<const P*>(bias),
                                         layout_of(s), static_cast<T*>(windows));
      HYDRA_KERNEL_CHECK(cudaGetLastError());
      return;
    }
    windows_forward_kernel<T, P, decltype(k)::value><<<blocks, 256, 0, stream>>>(
        static_cast<int>(s.seq), s.channels, s.bias_columns, static_cast<const T*>(x), x_row_stride,
        static_cast<const P*>(weight), static_cast<const P*>(bias), layout_of(s), static_cast<T*>(windows));
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
}

size_t conv_windows_backward_workspace(const ConvWindowsShape& s) {
  HYDRA_CHECK(conv_windows_supported(s), "conv windows: unsupported shape");
  return static_cast<size_t>(backward_tiles(s).rows) * s.channels * (s.kernel + 1) * sizeof(float);
}

void conv_windows_backward(const ConvWindowsShape& s, const void* dwindows, const void* x, int64_t x_row_stride,
                           const void* weight, void* dx, void* dweight, void* dbias, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream) {
  HYDRA_CHECK(conv_windows_supported(s), "conv windows: unsupported shape");
  HYDRA_CHECK(workspace_bytes >= conv_windows_backward_workspace(s),
              "conv windows: workspace of " << workspace_bytes << " bytes, need "
                                            << conv_windows_backward_workspace(s));
  const BackwardTiles tiles = backward_tiles(s);
  const dim3 grid(static_cast<unsigned>(tiles.rows), (s.channels + kBackwardThreads - 1) / kBackwardThreads);
  const int per = s.channels * (s.kernel + 1);
  dispatch(s, [&](auto k, auto t, auto p) {
    using T = typename decltype(t)::type;
    using P = typename decltype(p)::type;
    windows_backward_kernel<T, P, decltype(k)::value><<<grid, kBackwardThreads, 0, stream>>>(
        static_cast<int>(s.seq), s.channels, tiles.TT, tiles.n_tiles, static_cast<const T*>(dwindows), layout_of(s),
        static_cast<const T*>(x), x_row_stride, static_cast<const P*>(weight), static_cast<T*>(dx),
        static_cast<float*>(workspace));
    HYDRA_KERNEL_CHECK(cudaGetLastError());
    reduce_partials_kernel<P><<<(per + 31) / 32, dim3(32, kSlices), 0, stream>>>(
        static_cast<const float*>(workspace), static_cast<int>(tiles.rows), s.channels, s.kernel,
        static_cast<P*>(dweight), static_cast<P*>(dbias));
    HYDRA_KERNEL_CHECK(cudaGetLastError());
  });
}

}  // namespace hydra::kernels
