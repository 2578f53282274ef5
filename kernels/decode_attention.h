// One decode step of one attention layer over preallocated key/value slots
// (model/kv_cache.h's CacheRows; model/decode_attention.h wraps it): each of B rows puts its new
// key and value into slot count[b] of its row, and each of the row's query heads attends over the
// slots j < span with j <= count[b] (the row's cached tokens and the new one). It replaces the
// unfused step's index arithmetic, two indexed copies, the visibility mask and the matmul +
// masked softmax + matmul (about twenty kernels a layer, which bound decoding at batch 1) by one
// launch, or two when a row's keys are split over several blocks (short batches, long spans).
// Launchers only: raw device pointers, sizes, strides and an explicit stream.
//
// Arithmetic float32 (scores, softmax, the weighted sum of values); inputs and the output are
// stored in `dtype`. The unfused ops round the scores and the probabilities to bfloat16 where
// the inputs are bfloat16; the kernel does not, so it differs from them by those roundings.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/storage_type.h"

namespace hydra::kernels {

struct DecodeAttentionShape {
  int rows = 0;        // B
  int heads = 0;       // H query heads
  int kv_heads = 0;    // H_kv, divides H: query head h reads key/value head h / (H / H_kv)
  int key_size = 0;    // channels of a query and a key
  int value_size = 0;  // channels of a value
  int capacity = 0;    // slots of a row
  int span = 0;        // slots read, 1 <= span <= capacity
  float scale = 1.f;   // applied to q . k
  StorageType dtype = StorageType::kBFloat16;
  // MLA: the value of slot j is the first value_size channels of its key (no value slots).
  bool values_in_keys = false;
};

// Rows of one token: element (b, head, c) at b * row_stride + head * head_stride + c (elements).
struct DecodeTokens {
  const void* data = nullptr;
  int64_t row_stride = 0, head_stride = 0;
};

struct DecodeAttentionTensors {
  DecodeTokens q;       // [B, H, key_size]
  DecodeTokens k_new;   // [B, H_kv, key_size]
  DecodeTokens v_new;   // [B, H_kv, value_size]; unused when values_in_keys
  void* k_slots = nullptr;  // [B, capacity, H_kv, key_size], contiguous
  void* v_slots = nullptr;  // [B, capacity, H_kv, value_size], contiguous; unused when values_in_keys
  const int64_t* count = nullptr;  // [B], each < capacity: the slots holding the row's earlier tokens
  void* out = nullptr;  // [B, H, value_size], contiguous
};

// Whether the kernels take this shape and these pointers: sizes multiples of 8, at most 32 query
// heads a key/value head, 16-byte aligned rows, the shared memory within the device's limit.
// The caller runs the unfused ops otherwise.
bool decode_attention_supported(const DecodeAttentionShape& shape, const DecodeAttentionTensors& tensors);

// Bytes of workspace decode_attention needs on the current device (0 when one block a row and
// key/value head is enough).
size_t decode_attention_workspace_bytes(const DecodeAttentionShape& shape);

// The step. Every row writes its slot count[b] (a row the caller does not advance leaves a value
// that its next write replaces); nothing here reads or changes count. The workspace must hold
// decode_attention_workspace_bytes(shape).
void decode_attention(const DecodeAttentionShape& shape, const DecodeAttentionTensors& tensors, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream);

}  // namespace hydra::kernels
