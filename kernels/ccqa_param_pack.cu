// One launch per direction for all the CCQA prologue parameters (ccqa_param_pack.h): blockIdx.y
// picks the tensor, the x blocks stride over its elements.
#include "kernels/ccqa_param_pack.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "common/errors.h"

namespace hydra::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void pack_kernel(const CcqaParamSlots slots, float* packed) {
  const CcqaParamSlot s = slots.slot[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < s.count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    packed[s.offset + i] = s.type == CcqaParamType::kBFloat16
                               ? __bfloat162float(static_cast<const __nv_bfloat16*>(s.data)[i])
                               : static_cast<const float*>(s.data)[i];
  }
}

__global__ void unpack_kernel(const CcqaParamSlots slots, const float* packed) {
  const CcqaParamSlot s = slots.slot[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < s.count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = packed[s.offset + i];
    if (s.type == CcqaParamType::kBFloat16) static_cast<__nv_bfloat16*>(s.data)[i] = __float2bfloat16_rn(v);
    else static_cast<float*>(s.data)[i] = v;
  }
}

// Enough x blocks for the largest tensor (the conv2 weights), capped: the loops stride.
dim3 grid_of(const CcqaParamSlots& slots) {
  int64_t most = 0;
  for (const CcqaParamSlot& s : slots.slot) {
    HYDRA_CHECK(s.count >= 0 && (s.count == 0 || s.data != nullptr), "ccqa param slot without data");
    most = std::max(most, s.count);
  }
  const int64_t blocks = std::clamp<int64_t>((most + kThreads - 1) / kThreads, 1, 256);
  return dim3(static_cast<unsigned>(blocks), kCcqaParamSlots);
}

void check_launch() {
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) {
    HYDRA_FAIL(common::RuntimeFailure, "ccqa param pack: launch failed: " << cudaGetErrorString(rc));
  }
}

}  // namespace

void ccqa_pack_params(const CcqaParamSlots& slots, float* packed, cudaStream_t stream) {
  pack_kernel<<<grid_of(slots), kThreads, 0, stream>>>(slots, packed);
  check_launch();
}

void ccqa_unpack_params(const CcqaParamSlots& slots, const float* packed, cudaStream_t stream) {
  unpack_kernel<<<grid_of(slots), kThreads, 0, stream>>>(slots, packed);
  check_launch();
}

}  // namespace hydra::kernels
