// The attention types of docs/MODEL.md: the grouped-query family (MQA, GQA, MHA: one layer),
// CCQA (compressed convolutional GQA) and MLA.
// Each maps x [B, S, E] and the tokens' positions [B, S] (int64) to [B, S, E], ends with the
// per-head RMSNorm and W_o, and calls the one attention core (attention_core.h).
//
// Head counts are read off the projected tensors (view(..., -1, head_size)), never off the
// config, so that column-parallel projections that return a slice of the heads work unchanged.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "model/config.h"
#include "model/dims.h"
#include "model/kv_cache.h"
#include "model/layers.h"
#include "model/projection.h"
#include "model/tp_hooks.h"

namespace hydra::model {

// Tensor parallelism (model/tp_hooks.h): each type's sharding(dims, tp) says what splits;
// the constructors size their per-head parameters to this rank's heads (tp.size, tp.rank) and
// mark the replicated parameters inside the tp region with tp.sum_grad.
//
// Decoding (docs/MODEL.md "Decoding with caches"): decode(x, positions, cache) takes the
// normalised inputs x [1, T, E] of T new tokens of one sequence (a prompt, or the next token),
// appends what they leave to the sequence's cache, and returns what forward would return for
// those tokens had it been given the cached tokens and them. empty_cache() is the cache of this
// type before any token; a cache of another type is refused. decode_rows (below) is the same
// step for one token of each of B sequences with preallocated caches. Under tp each rank caches
// what its forward computes (its heads, or the replicated latent or KV heads) and decoding runs
// the forward's collectives.
struct AttentionImpl : torch::nn::Module {
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions) = 0;
  virtual torch::Tensor decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) = 0;
  virtual AttentionCache empty_cache() const = 0;
  // Decoding B sequences together with preallocated caches (model/decode_batch.h): x [1, B, E]
  // holds one new token of each row, positions [1, B]. Each row's token is put in slot count[b]
  // of its row and attends to slots 0 .. count[b] (the first `span` slots are read; span exceeds
  // every count). A row whose `write` [B] (bool) is false keeps its cache: its count does not
  // advance and its fixed state is not updated (its output is computed and meaningless). No
  // shape depends on the tokens and nothing is read back to the host.
  virtual torch::Tensor decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                                    const torch::Tensor& write, int64_t span) = 0;
  // The projections that take one input, a group each, as the type hands them to
  // project_same_input (pack_same_input_weights packs them for decoding).
  virtual std::vector<std::vector<ProjectionImpl*>> same_input_groups() = 0;
};
using Attention = std::shared_ptr<AttentionImpl>;

// The grouped-query family, one layer for three types (docs/MODEL.md "GQA"): H query heads of
// size d and kv_heads key/value heads of size d, query head h on KV head floor(h / (H / kv_heads));
// QK-norm (weights of size d shared by every head) then RoPE. mqa is kv_heads 1, gqa
// model.kv_heads, mha H (grouped_kv_heads, dims.h); the parameters' names and shapes follow
// kv_heads alone, so a gqa layer with model.kv_heads 1 is an mqa layer bit for bit.
struct GqaAttention : AttentionImpl {
  GqaAttention(const ModelConfig& config, int64_t kv_heads, const ProjectionFactory& factory,
               const TensorParallelHooks& tp = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions) override;
  torch::Tensor decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) override;
  AttentionCache empty_cache() const override { return GqaCache{}; }
  torch::Tensor decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                            const torch::Tensor& write, int64_t span) override;
  // q, k and v of one input: the group every call site projects with project_same_input.
  std::vector<ProjectionImpl*> qkv_projections() { return {wq.get(), wk.get(), wv.get()}; }
  std::vector<std::vector<ProjectionImpl*>> same_input_groups() override { return {qkv_projections()}; }
  // Tensor parallelism: the query heads split over tp; the KV heads split with them when tp
  // divides kv_heads (each rank's query heads then use its own KV heads only), a single KV head
  // (MQA) is replicated with gradients summed, and any other count is a ConfigError
  // (check_tensor_parallel, model_checks.h, refuses it at start naming the keys).
  static LayerSharding sharding(const Dims& dims, int64_t kv_heads, int tp = 1);
  // Steps 1-4 for the tokens of x: {q [B, S, H, d], k [B, S, kv_heads, d], v [B, S, kv_heads, d]}
  // (this rank's heads under tp).
  std::vector<torch::Tensor> queries_keys_values(const torch::Tensor& x, const torch::Tensor& positions);
  // Steps 6-7: the per-head norm and W_o of the attention output o [B, S, H, d].
  torch::Tensor output(const torch::Tensor& o);

  Dims dims;
  int64_t kv_heads;
  double eps, theta;
  Projection wq, wk, wv, wo;
  RMSNorm q_norm, k_norm, out_norm;  // out_norm: H*d entries, applied per head
};

// A causal 1-D convolution over the sequence with a bias, left-padded by K-1 so that output
// t sees inputs <= t. Channels are grouped in runs of `group_size` (1: depthwise).
// Initialised as the identity: last tap 1 on each channel's own input, others 0, bias 0.
struct CausalConvImpl : torch::nn::Module {
  CausalConvImpl(int64_t channels, int64_t group_size, int64_t kernel);
  torch::Tensor forward(const torch::Tensor& x);  // x [B, S, channels]
  // Decoding: x [B, K-1+n, channels] whose first K-1 rows are the inputs before the n new ones
  // (zeros before the sequence starts: forward's padding). Returns the n new outputs.
  torch::Tensor forward_unpadded(const torch::Tensor& x);
  int64_t group_size;
  torch::Tensor weight;  // [channels, group_size, K]
  torch::Tensor bias;    // [channels]
};
using CausalConv = std::shared_ptr<CausalConvImpl>;

// How CCQA runs steps 2-8, chosen once when the layer is built.
enum class CcqaImpl {
  kReference,  // LibTorch ops: the CPU path and the oracle of the fused one
  // The fused kernels (CUDA build; model.ccqa.kernel fused) on CUDA tensors of shapes they
  // take; the reference ops otherwise.
  kFused,
  // kFused with its host-side glue as before the fixed-cost work of 2026-11-23 (docs/PERF.md):
  // each parameter cast to float32 outside the prologue's autograd Function, the output norm
  // as head_rms_norm's eleven nodes. Only for bench/'s before/after columns and a kernel test.
  kFusedBaseline,
};
// model.ccqa.kernel: kFused for "fused", else kReference.
CcqaImpl ccqa_impl(const CcqaConfig& config);

// CCQA (docs/MODEL.md steps 1-8). The spec's packed u0 = [q0 ; k0] is stored as a query part and a
// key part of each convolution: conv1 is depthwise and conv2's groups are whole heads, so no
// filter spans both parts and the split convolutions compute exactly the packed ones, while
// each part shards by heads on its own (query heads and KV heads split separately).
struct CcqaAttention : AttentionImpl {
  // impl: ccqa_impl(config.ccqa) unless given.
  CcqaAttention(const ModelConfig& config, const ProjectionFactory& factory, const TensorParallelHooks& tp = {});
  CcqaAttention(const ModelConfig& config, const ProjectionFactory& factory, const TensorParallelHooks& tp,
                CcqaImpl impl);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions) override;
  // Step 2: values [B, S, H_kv, d_h] from v0 = x W_v [B, S, H_kv d_h]; with value shift the
  // last d_h/2 channels of each KV head come from the previous token (zero at t = 0). Public
  // for the tests.
  torch::Tensor values(const torch::Tensor& v0);
  // Steps 3-7 in plain LibTorch ops, the CPU path and the oracle of the fused prologue:
  // {q [B, S, heads, d_h], k [B, S, kv_heads, d_h]}. kv_of_head: defined when this rank holds
  // every KV head under tp (replicated KV), the KV head of each local query head.
  // conv_products: the convolutions as tensor products (model/causal_conv_products.h), as the
  // fused path runs them where the prologue kernels do not take the head size.
  std::vector<torch::Tensor> reference_prologue(const torch::Tensor& q0, const torch::Tensor& k0,
                                                const torch::Tensor& positions, const torch::Tensor& kv_of_head,
                                                bool conv_products = false);
  // Steps 4-7 (qk-mean, post-mix norm, temperature, RoPE) given the latents before (q0, k0) and
  // after (qc, kc) the convolutions, [B, S, channels] each: {q [B, S, heads, d_h], k}. Each
  // token's result depends on that token's inputs only.
  std::vector<torch::Tensor> mix_and_rotate(const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& qc,
                                            const torch::Tensor& kc, const torch::Tensor& positions,
                                            const torch::Tensor& kv_of_head);
  // Decoding on the reference ops.
  torch::Tensor decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) override;
  AttentionCache empty_cache() const override { return CcqaCache{}; }
  torch::Tensor decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                            const torch::Tensor& write, int64_t span) override;
  // q, k and v of one input: the group every call site projects with project_same_input.
  std::vector<ProjectionImpl*> qkv_projections() { return {wq.get(), wk.get(), wv.get()}; }
  std::vector<std::vector<ProjectionImpl*>> same_input_groups() override { return {qkv_projections()}; }
  // KV heads split over tp when tp divides H_kv; otherwise every rank holds all of them (and
  // their convolution channels and temperatures), with gradients summed over tp.
  static bool kv_split(const Dims& dims, int tp) { return kv_heads_split(dims.Hkv, tp); }
  // Replicated KV heads under tp: [heads] int64 on `options`' device, the (global) KV head of
  // each of this rank's `heads` query heads; undefined when this rank holds whole KV groups.
  torch::Tensor kv_of_local_heads(int64_t heads, const torch::TensorOptions& options) const;
  static LayerSharding sharding(const Dims& dims, int tp = 1);

  Dims dims;
  CcqaConfig cfg;
  CcqaImpl impl;
  TensorParallelHooks tp;
  double eps, theta;
  Projection wq, wk, wv, wo;
  CausalConv conv1_q, conv1_k, conv2_q, conv2_k;  // empty without use_convs
  RMSNorm q_norm, k_norm, out_norm;               // post-mix norms (d_h); per-head out norm (Lq)
  torch::Tensor tau;                              // [H_kv] key temperatures, k *= exp(tau)
};

// MLA with latent ratio latent_ratio and decoupled RoPE of size d_r = d/2 (key part shared by
// all heads).
struct MlaAttention : AttentionImpl {
  MlaAttention(const ModelConfig& config, const ProjectionFactory& factory, const TensorParallelHooks& tp = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions) override;
  // Decoding with W_uk absorbed into the query and W_uv applied to the attended latent
  // (docs/MODEL.md "Decoding with caches"): the cache holds [c_kv ; k_r] only.
  torch::Tensor decode(const torch::Tensor& x, const torch::Tensor& positions, AttentionCache& cache) override;
  AttentionCache empty_cache() const override { return MlaCache{}; }
  // Decoding's per-token steps: {the absorbed query [B, T, H, d_c + d_r], the cache entry
  // [c_kv ; k_r] [B, T, 1, d_c + d_r]}; and from the attended latent [B, T, H, d_c] the output
  // (W_uv per head, the per-head norm, W_o).
  std::vector<torch::Tensor> absorbed_query_and_entry(const torch::Tensor& x, const torch::Tensor& positions);
  torch::Tensor absorbed_output(const torch::Tensor& o_latent);
  torch::Tensor decode_rows(const torch::Tensor& x, const torch::Tensor& positions, CacheRows& rows,
                            const torch::Tensor& write, int64_t span) override;
  // The projections of each of MLA's three inputs (x, c_q, c_kv), as every call site groups them.
  std::vector<ProjectionImpl*> x_projections() { return {w_dq.get(), w_dkv.get(), w_kr.get()}; }
  std::vector<ProjectionImpl*> cq_projections() { return {w_uq.get(), w_qr.get()}; }
  std::vector<ProjectionImpl*> ckv_projections() { return {w_uk.get(), w_uv.get()}; }
  std::vector<std::vector<ProjectionImpl*>> same_input_groups() override {
    return {x_projections(), cq_projections(), ckv_projections()};
  }
  static LayerSharding sharding(const Dims& dims, int tp = 1);

  Dims dims;
  double eps, theta;
  Projection w_dq, w_uq, w_qr, w_dkv, w_uk, w_uv, w_kr, wo;
  RMSNorm q_norm, kv_norm, out_norm;  // latent norms (d_c), per-head out norm (H*d)
};

// "mqa" | "gqa" | "mha" | "ccqa" | "mla".
Attention make_attention(const std::string& type, const ModelConfig& config, const ProjectionFactory& factory,
                         const TensorParallelHooks& tp = {});
// The residual scale alpha of a type: h = x + alpha * Attn(RMSNorm(x)).
double residual_scale(const std::string& type, const ModelConfig& config);
LayerSharding attention_sharding(const std::string& type, const ModelConfig& config, int tp = 1);
// Calls tp.sum_grad on every parameter of `module` that `sharding` leaves replicated (its
// replicated projections and unsharded params): inside the tp region their gradients are
// partial sums on each rank. Nothing without tensor parallelism.
void mark_region_replicated(torch::nn::Module& module, const LayerSharding& sharding, const TensorParallelHooks& tp);

}  // namespace hydra::model
