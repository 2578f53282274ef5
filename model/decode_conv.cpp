// convolve_rows (decode_conv.h): the fused kernel where it applies, else the unfused ops.
#include "model/decode_conv.h"

#include <torch/types.h>

#include "model/attention.h"
#include "model/kv_cache.h"
#if HYDRA_CUDA
#include "model/decode_conv_cuda.h"
#endif

namespace hydra::model {

at::Tensor convolve_rows(CausalConvImpl& conv, at::Tensor& history, const at::Tensor& x, const at::Tensor& write) {
  const int64_t K = conv.weight.size(2);
  if (!history.defined()) history = torch::zeros({x.size(0), K - 1, x.size(2)}, x.options());
#if HYDRA_CUDA
  if (std::optional<at::Tensor> out = convolve_rows_cuda(conv.weight, conv.bias, conv.group_size, history, x, write)) {
    return *out;
  }
#endif
  const torch::Tensor joined = torch::cat({history, x}, 1);
  const torch::Tensor out = conv.forward_unpadded(joined);
  keep_where(history, joined.narrow(1, 1, K - 1), write);
  return out;
}

}  // namespace hydra::model
