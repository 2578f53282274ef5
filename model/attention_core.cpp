#include "model/attention_core.h"

#include <ATen/ATen.h>

#include "common/errors.h"
#include "common/torch_compat.h"

namespace hydra::model {

namespace {

// q [B, n, H, D] against the keys [B, m, Hkv, D] (m >= n, the queries the last n of them);
// visible [B, m] bool, when defined, also hides the keys of each row where it is false.
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const at::Tensor& visible = {}) {
  const int64_t B = q.size(0), n = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t m = k.size(1), Hkv = k.size(2), Dv = v.size(3);
  HYDRA_CHECK(H % Hkv == 0, "query heads " << H << " not a multiple of key/value heads " << Hkv);
  HYDRA_CHECK(m >= n, n << " queries but only " << m << " keys");
  const int64_t G = H / Hkv;
  // The G query heads of a key/value head and their n queries are G n rows against that head's
  // keys: q [B, Hkv, G n, D] against k [B, Hkv, m, D], one batched product with no copy of k or
  // v per query head (a broadcast over G would expand them G times: decoding with one query a
  // row, G of the size of the cache). Row g n + i is query i of head g.
  const at::Tensor qg = q.permute({0, 2, 1, 3}).reshape({B, Hkv, G * n, D});
  const at::Tensor kg = k.permute({0, 2, 1, 3});
  const at::Tensor vg = v.permute({0, 2, 1, 3});
  at::Tensor scores = at::matmul(qg, kg.transpose(-1, -2)) * scale;  // [B, Hkv, G n, m]
  const bool low_precision = scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16;
  if (low_precision) scores = scores.to(at::kFloat);
  // Query i (index m - n + i) sees keys j <= m - n + i: mask j - i > m - n.
  if (n > 1) {
    const at::Tensor future = at::ones({n, m}, q.options().dtype(at::kBool)).triu(m - n + 1).repeat({G, 1});
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  }
  if (visible.defined()) {
    scores = scores.masked_fill(visible.logical_not().view({B, 1, 1, m}), -std::numeric_limits<double>::infinity());
  }
  at::Tensor probs = at::softmax(scores, -1);
  if (low_precision) probs = probs.to(q.scalar_type());
  const at::Tensor out = at::matmul(probs, vg);  // [B, Hkv, G n, Dv]
  return out.reshape({B, H, n, Dv}).permute({0, 2, 1, 3});
}

}  // namespace

at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      double scale) {
  return masked_attention(q, k, v, scale);
}

at::Tensor attention_over_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  return masked_attention(q, k, v, scale);
}

at::Tensor attention_over_rows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& visible,
                               double scale) {
  HYDRA_CHECK(q.size(1) == 1 && visible.sizes() == at::IntArrayRef({k.size(0), k.size(1)}),
              "attention_over_rows: one query a row and a [rows, keys] mask");
  return masked_attention(q, k, v, scale, visible);
}

at::Tensor shift_values(const at::Tensor& v) {
  const int64_t S = v.size(1), half = v.size(3) / 2;
  const at::Tensor v2 = v.narrow(-1, half, v.size(3) - half);
  const at::Tensor v2_prev = at::cat({at::zeros_like(v2.narrow(1, 0, 1)), v2.narrow(1, 0, S - 1)}, 1);
  return at::cat({v.narrow(-1, 0, half), v2_prev}, -1);
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
