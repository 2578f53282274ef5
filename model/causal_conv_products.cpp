#include "model/causal_conv_products.h"

#include <ATen/ATen.h>

#include "common/errors.h"
#if HYDRA_CUDA
#include "model/conv_windows_cuda.h"
#endif

namespace hydra::model {
namespace {

void check_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  HYDRA_CHECK(x.dim() == 3 && weight.dim() == 3 && bias.dim() == 1, "causal convolution: x " << x.sizes()
                                                                        << ", weight " << weight.sizes());
  const int64_t C = x.size(2), g = weight.size(1);
  HYDRA_CHECK(weight.size(0) == C && bias.size(0) == C && C % g == 0,
              "causal convolution: " << C << " channels, weight " << weight.sizes() << ", bias " << bias.sizes());
}

// conv2's product: a [groups, B S, g K + cols] (a row: the (i, m) taps of its token and group,
// then `cols` columns of 1 / cols) through weight [C, g, K] as [groups, (i, m), o], with the bias
// as the product's last rows against the bias columns (cols > 0), else added after.
at::Tensor grouped_product(const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias, int64_t cols,
                           int64_t B, int64_t S) {
  const int64_t C = weight.size(0), g = weight.size(1), K = weight.size(2), groups = C / g;
  at::Tensor w = weight.view({groups, g, g * K});
  if (cols > 0) w = at::cat({w, bias.view({groups, g, 1}).expand({groups, g, cols})}, 2);
  // (A float32 weight meets bf16 windows under autocast, which casts both; without it, the
  // windows' type wins.)
  const at::Tensor y = at::bmm(a, w.transpose(1, 2).to(a.scalar_type())).transpose(0, 1).reshape({B, S, C});
  return cols > 0 ? y : y + bias;
}

// windows[b, t, c, m] = x[b, t - (K-1) + m, c], zero before the first token: a view.
at::Tensor unfold_causal(const at::Tensor& x, int64_t K) {
  return at::constant_pad_nd(x, {0, 0, K - 1, 0}).unfold(1, K, 1);
}

// windows [B, S, C, K] as conv2's rows [C / g, B S, g K]: group j's tokens, each with (i, m) at
// i K + m for the group's channel i (a copy unless already laid out so).
at::Tensor group_rows(const at::Tensor& windows, int64_t g) {
  const int64_t B = windows.size(0), S = windows.size(1), C = windows.size(2), K = windows.size(3);
  return windows.reshape({B * S, C / g, g * K}).transpose(0, 1);
}

}  // namespace

at::Tensor causal_conv_products(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_conv(x, weight, bias);
  const int64_t B = x.size(0), S = x.size(1), C = x.size(2), g = weight.size(1), K = weight.size(2);
  const at::Tensor windows = unfold_causal(x, K);  // [B, S, C, K]
  if (g == 1) return (windows * weight.view({C, K})).sum(-1) + bias;
  return grouped_product(group_rows(windows, g), weight, bias, 0, B, S);
}

at::Tensor conv2_operand(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, int64_t g,
                         int64_t bias_columns) {
  check_conv(x, w1, b1);
  const int64_t C = x.size(2);
  HYDRA_CHECK(w1.size(1) == 1 && g >= 1 && C % g == 0 && (bias_columns == 0 || bias_columns == 8) &&
                  bias_columns <= g,
              "conv2_operand: weight " << w1.sizes() << ", " << C << " channels in groups of " << g << ", "
                                       << bias_columns << " bias columns");
#if HYDRA_CUDA
  if (std::optional<at::Tensor> a = conv2_operand_cuda(x, w1, b1, g, bias_columns)) return *a;
#endif
  const at::Tensor a = group_rows(unfold_causal(causal_conv_products(x, w1, b1), w1.size(2)), g);
  if (bias_columns == 0) return a.contiguous();
  const double column = 1.0 / static_cast<double>(bias_columns);
  return at::cat({a, at::full({a.size(0), a.size(1), bias_columns}, column, a.options())}, 2);
}

at::Tensor causal_conv_pair_products(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                     const at::Tensor& w2, const at::Tensor& b2) {
  check_conv(x, w2, b2);
  const int64_t g = w2.size(1), K = w2.size(2);
  HYDRA_CHECK(w1.size(2) == K, "causal convolution pair: kernels " << w1.size(2) << " and " << K);
  // conv2's bias rides in the product where the groups are wide enough to hold its columns.
  const int64_t cols = g >= 8 ? 8 : 0;
  return grouped_product(conv2_operand(x, w1, b1, g, cols), w2, b2, cols, x.size(0), x.size(1));
}

}  // namespace hydra::model
