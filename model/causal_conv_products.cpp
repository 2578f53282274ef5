#include "model/causal_conv_products.h"

#include <ATen/ATen.h>

#include "common/errors.h"

namespace hydra::model {

at::Tensor causal_conv_products(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  HYDRA_CHECK(x.dim() == 3 && weight.dim() == 3 && bias.dim() == 1, "causal_conv_products: x " << x.sizes()
                                                                         << ", weight " << weight.sizes());
  const int64_t B = x.size(0), S = x.size(1), C = x.size(2);
  const int64_t g = weight.size(1), K = weight.size(2);
  HYDRA_CHECK(weight.size(0) == C && bias.size(0) == C && C % g == 0,
              "causal_conv_products: " << C << " channels, weight " << weight.sizes() << ", bias " << bias.sizes());
  const int64_t groups = C / g;
  // windows[b, t, c, m] = x[b, t - (K-1) + m, c], zero before the first token: a view.
  const at::Tensor windows = at::constant_pad_nd(x, {0, 0, K - 1, 0}).unfold(1, K, 1);  // [B, S, C, K]
  if (g == 1) return (windows * weight.view({C, K})).sum(-1) + bias;
  // Group j: rows (b, t), columns (i, m) for its input channel i and tap m, against weight
  // [j g + o, i, m] as [(i, m), o]: a batched product over the groups.
  const at::Tensor a = windows.reshape({B * S, groups, g * K}).transpose(0, 1);  // [groups, B S, g K]
  const at::Tensor w = weight.view({groups, g, g * K}).transpose(1, 2);           // [groups, g K, g]
  return at::bmm(a, w).transpose(0, 1).reshape({B, S, C}) + bias;
}

}  // namespace hydra::model
