// Packing of the CCQA prologue's small parameters (conv weights and biases, norm weights,
// tau) into one float32 buffer, and the transpose for their gradients, in one launch each.
// The prologue kernels read float32 parameters; casting eleven tensors one by one cost eleven
// kernel launches and eleven autograd nodes per call in the forward and eleven more casts in
// the backward (docs/PERF.md, 2026-11-23, fixed cost of the fused layer).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace hydra::kernels {

constexpr int kCcqaParamSlots = 11;  // the tensors of CcqaPrologueParams, in declaration order

enum class CcqaParamType { kFloat32, kBFloat16 };

// One tensor outside the packed buffer: `count` contiguous elements at `data`, stored at
// [offset, offset + count) of the buffer. count 0: absent (no convolutions).
struct CcqaParamSlot {
  void* data = nullptr;
  int64_t offset = 0;
  int64_t count = 0;
  CcqaParamType type = CcqaParamType::kFloat32;
};

struct CcqaParamSlots {
  CcqaParamSlot slot[kCcqaParamSlots];
};

// packed[offset + i] = float(slot.data[i]) for every slot.
void ccqa_pack_params(const CcqaParamSlots& slots, float* packed, cudaStream_t stream);

// slot.data[i] = packed[offset + i], rounded to the slot's type (to nearest even for bf16),
// for every slot.
void ccqa_unpack_params(const CcqaParamSlots& slots, const float* packed, cudaStream_t stream);

}  // namespace hydra::kernels
