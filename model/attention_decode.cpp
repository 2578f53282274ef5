// Decoding with caches, per attention type (docs/MODEL.md "Decoding with caches"): the new
// tokens' projections, the cache grown by what they leave, and attention of their queries over
// the whole cache. Each reads as its forward, whose steps it reuses where a token needs only
// itself (projections, norms, RoPE, qk-mean, the output), and replaces the steps that read
// earlier tokens (attention; CCQA's convolutions and value shift) by their cached form.
#include <cmath>

#include <torch/types.h>

#include "common/errors.h"
#include "model/attention.h"
#include "model/attention_core.h"
#include "model/fused_ops.h"
#include "model/kv_cache.h"
#include "model/same_input_projections.h"

namespace hydra::model {

// ---------------------------------------------------------------------------------------------
// MQA, GQA, MHA: the key/value heads are the cache.
torch::Tensor GqaAttention::decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) {
  const std::vector<torch::Tensor> qkv = queries_keys_values(x, positions);
  GqaCache& c = std::get<GqaCache>(cache);
  c.k = append_tokens(c.k, qkv[1]);
  c.v = append_tokens(c.v, qkv[2]);
  return output(attention_over_cache(qkv[0], c.k, c.v, 1.0 / std::sqrt(static_cast<double>(dims.d))));
}

// ---------------------------------------------------------------------------------------------
// CCQA: keys and values after the prologue, plus the convolutions' and the shift's view of the
// previous tokens (kv_cache.h).
namespace {

// conv over the K-1 inputs before x (history, [1, K-1, C]; zeros when undefined: the padding)
// and x [1, n, C]; history becomes the last K-1 inputs. Returns the n outputs.
torch::Tensor convolve_after(CausalConvImpl& conv, torch::Tensor& history, const torch::Tensor& x) {
  const int64_t K = conv.weight.size(2);
  if (!history.defined()) history = torch::zeros({x.size(0), K - 1, x.size(2)}, x.options());
  const torch::Tensor joined = torch::cat({history, x}, 1);
  history = joined.narrow(1, joined.size(1) - (K - 1), K - 1);
  return conv.forward_unpadded(joined);
}

}  // namespace

torch::Tensor CcqaAttention::decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) {
  const int64_t T = x.size(1), dh = dims.dh;
  CcqaCache& c = std::get<CcqaCache>(cache);
  // 1. Down-projections and the values' projection, every token at once.
  const std::vector<torch::Tensor> qkv0 = project_same_input(x, qkv_projections());
  const torch::Tensor &q0 = qkv0[0], &k0 = qkv0[1], &v0 = qkv0[2];
  // Under tp with replicated KV heads: the KV head of each of this rank's query heads (the
  // cache then holds every KV head, as the forward computes them all).
  const torch::Tensor kv_of_head = kv_of_local_heads(q0.size(-1) / dh, x.options());
  // 2-3. The value shift reads the previous token's projection (zero before the first), the
  // convolutions continue from the last K-1 inputs of each.
  if (!c.v0_last.defined()) c.v0_last = torch::zeros({1, 1, v0.size(2)}, v0.options());
  const torch::Tensor v = values(torch::cat({c.v0_last, v0}, 1)).narrow(1, 1, T);
  c.v0_last = v0.narrow(1, T - 1, 1);
  const torch::Tensor qc = cfg.use_convs ? convolve_after(*conv2_q, c.conv2_q, convolve_after(*conv1_q, c.conv1_q, q0)) : q0;
  const torch::Tensor kc = cfg.use_convs ? convolve_after(*conv2_k, c.conv2_k, convolve_after(*conv1_k, c.conv1_k, k0)) : k0;
  // 4-7. Per token, as in the forward (with its sum over tp of a KV group's queries).
  const std::vector<torch::Tensor> qk = mix_and_rotate(q0, k0, qc, kc, positions, kv_of_head);
  // 7. The new queries over the keys and values.
  c.k = append_tokens(c.k, qk[1]);
  c.v = append_tokens(c.v, v);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  const torch::Tensor o = kv_of_head.defined() ? attention_over_cache(qk[0], c.k.index_select(2, kv_of_head),
                                                                      c.v.index_select(2, kv_of_head), scale)
                                               : attention_over_cache(qk[0], c.k, c.v, scale);
  // 8. Per-head norm, W_o (the reference ops, as the forward off the fused path).
  return wo->forward(head_rms_norm(o.reshape({1, T, -1}), out_norm->weight, dh, eps));
}

// ---------------------------------------------------------------------------------------------
// MLA with absorbed up-projections. Head h's score is
//   <q_c,h, c_kv W_uk,h^T> + <q_r,h, k_r>  =  <[q_c,h W_uk,h ; q_r,h], [c_kv ; k_r]>
// (W_uk,h = rows [h d, (h+1) d) of W_uk, [d, d_c]), so every head attends with one query of
// d_c + d_r channels to the one cached key [c_kv ; k_r], and its output
//   sum_j p_j c_kv,j W_uv,h^T  =  (sum_j p_j c_kv,j) W_uv,h^T
// is the attended latent times W_uv,h^T: W_uk and W_uv touch the new tokens only, never the
// cache. (W_uv cannot be folded further into W_o: the per-head output norm lies between.)
std::vector<torch::Tensor> MlaAttention::absorbed_query_and_entry(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), T = x.size(1), d = dims.d, dr = dims.dr, dc = dims.dc;
  const torch::Tensor w_uk_heads = w_uk->plain_weight();
  HYDRA_CHECK(w_uk_heads.defined(), "MLA decoding needs plain W_uk, W_uv projections");
  const std::vector<torch::Tensor> from_x = project_same_input(x, x_projections());
  // Queries (steps 1-3): q_c, and q_r rotated.
  const torch::Tensor c_q = q_norm->forward(from_x[0]);
  const std::vector<torch::Tensor> from_cq = project_same_input(c_q, cq_projections());
  const torch::Tensor q_c = from_cq[0].view({B, T, -1, d});
  const torch::Tensor q_r = fused_rope(from_cq[1].view({B, T, -1, dr}), positions, theta);
  // The cached key (steps 4 and 6): [c_kv ; RoPE(x W_kr)], one head.
  const torch::Tensor c_kv = kv_norm->forward(from_x[1]);
  const torch::Tensor k_r = fused_rope(from_x[2].view({B, T, 1, dr}), positions, theta);
  // Absorbed query: q_c,h W_uk,h for every head h ([H, d, d_c] viewed from [H d, d_c]).
  const int64_t heads = q_c.size(2);
  const torch::Tensor q_latent = torch::einsum("bnhd,hdc->bnhc", {q_c, w_uk_heads.view({heads, d, dc})});
  return {torch::cat({q_latent, q_r}, -1), torch::cat({c_kv.unsqueeze(2), k_r}, -1)};
}

torch::Tensor MlaAttention::absorbed_output(const torch::Tensor& o_latent) {
  const int64_t B = o_latent.size(0), T = o_latent.size(1), heads = o_latent.size(2), d = dims.d;
  const torch::Tensor w_uv_heads = w_uv->plain_weight();
  HYDRA_CHECK(w_uv_heads.defined(), "MLA decoding needs plain W_uk, W_uv projections");
  const torch::Tensor o = torch::einsum("bnhc,hdc->bnhd", {o_latent, w_uv_heads.view({heads, d, dims.dc})});
  // Step 9.
  return wo->forward(fused_head_rms_norm(o.reshape({B, T, -1}), out_norm->weight, d, eps));
}

torch::Tensor MlaAttention::decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) {
  const std::vector<torch::Tensor> q_entry = absorbed_query_and_entry(x, positions);
  // Steps 5, 7 and 8 over the cache: scale 1/sqrt(d + d_r) as in the forward.
  MlaCache& c = std::get<MlaCache>(cache);
  c.latent = append_tokens(c.latent, q_entry[1]);
  return absorbed_output(attention_over_cache(q_entry[0], c.latent, c.latent.narrow(-1, 0, dims.dc),
                                              1.0 / std::sqrt(static_cast<double>(dims.d + dims.dr))));
}

}  // namespace hydra::model
