// Tensors to kernels/decode_attention.h's launchers: the CUDA half of decode_attention.cpp
// (CUDA build only).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "model/decode_attention.h"

namespace hydra::model {

// The fused step's output [B, H, Dv], or nullopt (nothing written) when the kernels do not take
// these tensors: not CUDA, another dtype, a kv_of_head map, sizes or alignment the kernels refuse.
// The slots are allocated already.
std::optional<at::Tensor> put_and_attend_rows_cuda(const RowsToken& token, at::Tensor& k_slots, at::Tensor& v_slots,
                                                   const CacheRows& rows, int64_t span, double scale);

}  // namespace hydra::model
