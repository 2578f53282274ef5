// One decode step of attention over preallocated rows (model/decode_batch.h; the caches of
// model/kv_cache.h's CacheRows): each row's new key and value go into slot count[b] of its row,
// then each row's query attends over the slots j < span with j <= count[b]. On CUDA in
// bfloat16 or float32 one fused step (kernels/decode_attention.h: one or two launches where the
// unfused ops take about twenty); elsewhere, and for shapes the kernels do not take, put_rows and
// attention_over_rows, which are also its reference in tests.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/kv_cache.h"

namespace hydra::model {

// The new token's part of a layer's rows: q [B, H, Dqk]; k_new [B, H_kv, Dqk]; v_new
// [B, H_kv, Dv], or undefined when the values are the first `value_size` channels of the keys
// (MLA's latent: there are no value slots). kv_of_head [H] (int64, optional): the key/value head
// each local query head reads where it is not h / (H / H_kv) (CCQA under replicated tensor
// parallelism; the unfused ops then run).
struct RowsToken {
  at::Tensor q, k_new, v_new;
  int64_t value_size = 0;
  at::Tensor kv_of_head;
};

// Puts the token into k_slots / v_slots ([B, capacity, H_kv, D], allocated as zeros at the first
// put; v_slots untouched when the values live in the keys) and returns the attention output
// [B, H, Dv]. Nothing here advances rows.count (advance_rows does, after the layer's puts).
at::Tensor put_and_attend_rows(const RowsToken& token, at::Tensor& k_slots, at::Tensor& v_slots, const CacheRows& rows,
                               int64_t span, double scale);

}  // namespace hydra::model
