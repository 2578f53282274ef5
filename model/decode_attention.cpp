// put_and_attend_rows (decode_attention.h): the fused step where the kernels take it, else the
// unfused ops.
#include "model/decode_attention.h"

#include <ATen/ATen.h>

#include "model/attention_core.h"
#if HYDRA_CUDA
#include "model/decode_attention_cuda.h"
#endif

namespace hydra::model {

at::Tensor put_and_attend_rows(const RowsToken& token, at::Tensor& k_slots, at::Tensor& v_slots, const CacheRows& rows,
                               int64_t span, double scale) {
  const bool values_in_keys = !token.v_new.defined();
  allocate_slots(k_slots, rows, token.k_new);
  if (!values_in_keys) allocate_slots(v_slots, rows, token.v_new);
#if HYDRA_CUDA
  if (std::optional<at::Tensor> out = put_and_attend_rows_cuda(token, k_slots, v_slots, rows, span, scale)) return *out;
#endif
  put_rows(k_slots, rows, token.k_new);
  if (!values_in_keys) put_rows(v_slots, rows, token.v_new);
  at::Tensor keys = k_slots.narrow(1, 0, span);
  at::Tensor values = values_in_keys ? keys.narrow(-1, 0, token.value_size) : v_slots.narrow(1, 0, span);
  if (token.kv_of_head.defined()) {
    keys = keys.index_select(2, token.kv_of_head);
    values = values.index_select(2, token.kv_of_head);
  }
  return attention_over_rows(token.q.unsqueeze(1), keys, values, visible_slots(rows, span), scale).squeeze(1);
}

}  // namespace hydra::model
