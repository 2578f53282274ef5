// Private to kernels/: what the row-wise fused kernels (rms_norm.cu, rope.cu, swiglu.cu) share:
// 16-byte vector loads and stores converting to and from float32, the rounding of a float32
// value to the storage type (so a kernel can round where the unfused LibTorch ops round); and,
// through cuda_check.cuh, the launch-check macro.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/errors.h"
#include "kernels/cuda_check.cuh"
#include "kernels/storage_type.h"


namespace hydra::kernels::vector_io {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }

// v rounded to T and back: where LibTorch would hold an intermediate in T, the kernels round
// there too, so that they differ from the unfused ops by reduction order only.
template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float(from_float<T>(v)); }

// VEC consecutive elements, loaded or stored as one access (16 bytes when VEC * sizeof(T) is 16;
// callers pick VEC so that every such access is aligned).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <typename T, int VEC>
__device__ __forceinline__ void unpack(const Pack<T, VEC>& pack, float (&out)[VEC]) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = to_float(pack.v[k]);
}

template <typename T, int VEC>
__device__ __forceinline__ void load(const T* p, float (&out)[VEC]) {
  unpack<T, VEC>(load_pack<T, VEC>(p), out);
}

template <typename T, int VEC>
__device__ __forceinline__ void store(T* p, const float (&in)[VEC]) {
  Pack<T, VEC> pack;
#pragma unroll
  for (int k = 0; k < VEC; ++k) pack.v[k] = from_float<T>(in[k]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pack;
}

// Sum over the `width` lanes (a power of two <= 32) of each aligned lane group. Every lane of
// the warp must call it.
__device__ __forceinline__ float group_sum(float v, int width) {
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// A type as a value, for generic lambdas: typename decltype(tag)::type.
template <typename T>
struct TypeTag {
  using type = T;
};

// Host side: f(TypeTag<tensor type>{}, TypeTag<parameter type>{}) for kernels whose tensors and
// parameters are each float32 or bf16 (four instantiations).
template <typename F>
void with_storage_types(StorageType tensors, StorageType params, F&& f) {
  const auto with_params = [&](auto t) {
    if (params == StorageType::kFloat32) f(t, TypeTag<float>{});
    else f(t, TypeTag<bf16>{});
  };
  if (tensors == StorageType::kFloat32) with_params(TypeTag<float>{});
  else with_params(TypeTag<bf16>{});
}

// Host side: the elements per vector access for T, or 1 when `count` elements per row or any
// base pointer would break 16-byte alignment.
template <typename T>
constexpr int kMaxVec = 16 / static_cast<int>(sizeof(T));

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The smallest power of two >= v, capped at 32: the lanes that share one row.
inline int lanes_for(int64_t v) {
  int lanes = 1;
  while (lanes < 32 && lanes < v) lanes *= 2;
  return lanes;
}

}  // namespace hydra::kernels::vector_io
