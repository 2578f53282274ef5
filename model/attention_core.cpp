#include "model/attention_core.h"

#include <ATen/ATen.h>

#include "common/errors.h"
#include "common/torch_compat.h"

namespace hydra::model {

at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      double scale) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(2), Dv = v.size(3);
  HYDRA_CHECK(H % Hkv == 0, "query heads " << H << " not a multiple of key/value heads " << Hkv);
  const int64_t G = H / Hkv;
  // Group the query heads under their key/value head instead of repeating k and v:
  // q [B, Hkv, G, S, D] against k [B, Hkv, 1, S, D].
  const at::Tensor qg = q.permute({0, 2, 1, 3}).reshape({B, Hkv, G, S, D});
  const at::Tensor kg = k.permute({0, 2, 1, 3}).unsqueeze(2);
  const at::Tensor vg = v.permute({0, 2, 1, 3}).unsqueeze(2);
  at::Tensor scores = at::matmul(qg, kg.transpose(-1, -2)) * scale;  // [B, Hkv, G, S, S]
  const bool low_precision = scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16;
  if (low_precision) scores = scores.to(at::kFloat);
  const at::Tensor future = at::ones({S, S}, q.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1);
  if (low_precision) probs = probs.to(q.scalar_type());
  const at::Tensor out = at::matmul(probs, vg);  // [B, Hkv, G, S, Dv]
  return out.reshape({B, H, S, Dv}).permute({0, 2, 1, 3});
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
#if HYDRA_HAS_SDPA
  if (q.is_cuda()) {
    // SDPA wants [B, heads, S, D]; enable_gqa maps query head h to key/value head h / G.
    const at::Tensor out = at::scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), /*attn_mask=*/{}, /*dropout_p=*/0.0,
        /*is_causal=*/true, scale, /*enable_gqa=*/k.size(2) != q.size(2));
    return out.transpose(1, 2);
  }
#endif
  return causal_attention_reference(q, k, v, scale);
}

}  // namespace hydra::model
