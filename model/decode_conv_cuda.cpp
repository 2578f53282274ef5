// convolve_rows_cuda (decode_conv_cuda.h): shapes and pointers for kernels/decode_conv.h.
#include "model/decode_conv_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/decode_conv.h"
#include "model/fused_ops_cuda.h"

namespace hydra::model {

std::optional<at::Tensor> convolve_rows_cuda(const at::Tensor& weight, const at::Tensor& bias, int64_t group_size,
                                             at::Tensor& history, const at::Tensor& x, const at::Tensor& write) {
  const bool has_bias = bias.defined();
  if (!fused_kernels_apply({x, history, weight}) || (has_bias && !fused_kernels_apply({x, bias})) ||
      !write.is_cuda() || write.scalar_type() != at::kBool || !write.is_contiguous() || x.dim() != 3 ||
      x.size(1) != 1 || x.stride(2) != 1 || !history.is_contiguous() || !weight.is_contiguous() ||
      (has_bias && !bias.is_contiguous())) {
    return std::nullopt;
  }
  kernels::DecodeConvShape s;
  s.rows = static_cast<int>(x.size(0));
  s.channels = static_cast<int>(x.size(2));
  s.group_size = static_cast<int>(group_size);
  s.kernel = static_cast<int>(weight.size(2));
  s.dtype = storage_of(x);
  if (!kernels::decode_conv_supported(s) || history.sizes() != at::IntArrayRef({s.rows, s.kernel - 1, s.channels}) ||
      weight.size(0) != s.channels || weight.size(1) != group_size || write.numel() != s.rows) {
    return std::nullopt;
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({s.rows, 1, s.channels}, x.options());
  kernels::DecodeConvTensors t;
  t.history = history.data_ptr();
  t.x = x.data_ptr();
  t.x_row_stride = x.stride(0);
  t.weight = weight.data_ptr();
  t.bias = has_bias ? bias.data_ptr() : nullptr;
  t.write = write.data_ptr<bool>();
  t.out = out.data_ptr();
  kernels::decode_conv_rows(s, t, at::cuda::getCurrentCUDAStream());
  return out;
}

}  // namespace hydra::model
