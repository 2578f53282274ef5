// SwiGLU gate kernels (launchers in swiglu.h).
//
// Design invariants
// - Elementwise, grid-stride over VEC-element vectors (16 bytes when the count and every base
//   pointer allow, else single elements); each thread reads its vector of every input once.
// - Float32 arithmetic; silu(g) and the gradient reaching silu are rounded to the storage type
//   where the unfused LibTorch ops hold them (vector_io::round_to).
// - The grid is capped (a few blocks per SM's worth of work), independent of the device.
#include "kernels/swiglu.h"

#include <algorithm>

#include "kernels/vector_io.cuh"

namespace hydra::kernels {
namespace {

using vector_io::bf16;
using vector_io::load;
using vector_io::round_to;
using vector_io::store;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) forward_kernel(int64_t vectors, const T* g, const T* u, T* out) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * kThreads) {
    float gv[VEC], uv[VEC], o[VEC];
    load<T, VEC>(g + v * VEC, gv);
    load<T, VEC>(u + v * VEC, uv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = round_to<T>(gv[k] * sigmoid(gv[k])) * uv[k];
    store<T, VEC>(out + v * VEC, o);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads) backward_kernel(int64_t vectors, const T* g, const T* u, const T* dout,
                                                            T* dg, T* du) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * kThreads) {
    float gv[VEC], uv[VEC], dv[VEC], dgv[VEC], duv[VEC];
    load<T, VEC>(g + v * VEC, gv);
    load<T, VEC>(u + v * VEC, uv);
    load<T, VEC>(dout + v * VEC, dv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float s = sigmoid(gv[k]);
      duv[k] = dv[k] * round_to<T>(gv[k] * s);
      dgv[k] = round_to<T>(dv[k] * uv[k]) * s * (1.f + gv[k] * (1.f - s));
    }
    store<T, VEC>(du + v * VEC, duv);
    store<T, VEC>(dg + v * VEC, dgv);
  }
}

unsigned blocks_for(int64_t vectors) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (vectors + kThreads - 1) / kThreads)));
}

template <typename T>
bool vectorisable(int64_t count, std::initializer_list<const void*> pointers) {
  if (count % vector_io::kMaxVec<T> != 0) return false;
  for (const void* p : pointers) {
    if (!vector_io::aligned16(p)) return false;
  }
  return true;
}

template <typename T>
void launch_forward(int64_t count, const void* g, const void* u, void* out, cudaStream_t stream) {
  constexpr int kVec = vector_io::kMaxVec<T>;
  const T *gt = static_cast<const T*>(g), *ut = static_cast<const T*>(u);
  T* ot = static_cast<T*>(out);
  if (vectorisable<T>(count, {g, u, out})) {
    forward_kernel<T, kVec><<<blocks_for(count / kVec), kThreads, 0, stream>>>(count / kVec, gt, ut, ot);
  } else {
    forward_kernel<T, 1><<<blocks_for(count), kThreads, 0, stream>>>(count, gt, ut, ot);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

template <typename T>
void launch_backward(int64_t count, const void* g, const void* u, const void* dout, void* dg, void* du,
                     cudaStream_t stream) {
  constexpr int kVec = vector_io::kMaxVec<T>;
  const T *gt = static_cast<const T*>(g), *ut = static_cast<const T*>(u), *dt = static_cast<const T*>(dout);
  T *dgt = static_cast<T*>(dg), *dut = static_cast<T*>(du);
  if (vectorisable<T>(count, {g, u, dout, dg, du})) {
    backward_kernel<T, kVec><<<blocks_for(count / kVec), kThreads, 0, stream>>>(count / kVec, gt, ut, dt, dgt, dut);
  } else {
    backward_kernel<T, 1><<<blocks_for(count), kThreads, 0, stream>>>(count, gt, ut, dt, dgt, dut);
  }
  HYDRA_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace

void swiglu_forward(int64_t count, StorageType dtype, const void* g, const void* u, void* out, cudaStream_t stream) {
  HYDRA_CHECK(count >= 0, "swiglu_forward: count " << count);
  if (count == 0) return;
  if (dtype == StorageType::kBFloat16) {
    launch_forward<bf16>(count, g, u, out, stream);
  } else {
    launch_forward<float>(count, g, u, out, stream);
  }
}

void swiglu_backward(int64_t count, StorageType dtype, const void* g, const void* u, const void* dout, void* dg,
                     void* du, cudaStream_t stream) {
  HYDRA_CHECK(count >= 0, "swiglu_backward: count " << count);
  if (count == 0) return;
  if (dtype == StorageType::kBFloat16) {
    launch_backward<bf16>(count, g, u, dout, dg, du, stream);
  } else {
    launch_backward<float>(count, g, u, dout, dg, du, stream);
  }
}

}  // namespace hydra::kernels
