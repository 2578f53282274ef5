// The grouped-query family (MQA, GQA, MHA) and MLA, and the per-type dispatch. CCQA lives in
// attention_ccqa.cpp.
#include "model/attention.h"

#include <cmath>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "common/errors.h"
#include "model/attention_core.h"
#include "model/fused_ops.h"
#include "model/same_input_projections.h"

namespace hydra::model {

// ---------------------------------------------------------------------------------------------
// The grouped-query family: MQA (1 KV head), GQA (model.kv_heads), MHA (H)
LayerSharding GqaAttention::sharding(const Dims& m, int64_t kv_heads, int tp) {
  const auto col = ShardRole::kColumn, row = ShardRole::kRow, rep = ShardRole::kReplicated;
  // One key/value head (MQA): every rank needs it whole. More: they split with the query heads,
  // which needs tp to divide them (check_tensor_parallel says so at start, naming the keys).
  const bool replicated = kv_heads == 1;
  if (!replicated && kv_heads % tp != 0) {
    HYDRA_FAIL(common::ConfigError, "tensor parallelism: parallel.tp = " << tp << " does not divide the " << kv_heads
                                        << " key/value heads of a grouped-query layer");
  }
  const ShardRole kv_role = replicated ? rep : col;
  const int64_t kv_unit = replicated ? 1 : m.d;
  return {{{"wq", m.E, m.H * m.d, col, m.d, m.init_std},
           {"wk", m.E, kv_heads * m.d, kv_role, kv_unit, m.init_std},
           {"wv", m.E, kv_heads * m.d, kv_role, kv_unit, m.init_std},
           {"wo", m.H * m.d, m.E, row, m.d, m.out_std}},
          {{"q_norm.weight", false, 1, "QK-norm over d, shared by heads"},
           {"k_norm.weight", false, 1, "QK-norm over d, shared by the key heads"},
           {"out_norm.weight", true, m.d, "per-head output norm, split with the heads"}}};
}

GqaAttention::GqaAttention(const ModelConfig& c, int64_t kv_heads_, const ProjectionFactory& factory,
                           const TensorParallelHooks& tp)
    : dims(model_dims(c)), kv_heads(kv_heads_), eps(c.norm_eps), theta(c.rope_theta) {
  HYDRA_CHECK(kv_heads >= 1 && dims.H % kv_heads == 0,
              "grouped-query attention: " << kv_heads << " key/value heads for " << dims.H << " query heads");
  const LayerSharding shard = sharding(dims, kv_heads, tp.size);
  const auto& specs = shard.projections;
  wq = register_module("wq", make_projection(specs, "wq", factory));
  wk = register_module("wk", make_projection(specs, "wk", factory));
  wv = register_module("wv", make_projection(specs, "wv", factory));
  wo = register_module("wo", make_projection(specs, "wo", factory));
  q_norm = register_module("q_norm", std::make_shared<RMSNormImpl>(dims.d, eps));
  k_norm = register_module("k_norm", std::make_shared<RMSNormImpl>(dims.d, eps));
  out_norm = register_module("out_norm", std::make_shared<RMSNormImpl>(dims.H * dims.d / tp.size, eps));
  mark_region_replicated(*this, shard, tp);
}

std::vector<torch::Tensor> GqaAttention::queries_keys_values(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), S = x.size(1), d = dims.d;
  const std::vector<torch::Tensor> qkv = project_same_input(x, qkv_projections());
  // QK-norm then RoPE, one node (and on CUDA one kernel) each. Head counts come from the
  // projections (this rank's heads under tp).
  const torch::Tensor q = fused_rms_norm_rope(qkv[0].view({B, S, -1, d}), q_norm->weight, positions, theta, eps);
  const torch::Tensor k = fused_rms_norm_rope(qkv[1].view({B, S, -1, d}), k_norm->weight, positions, theta, eps);
  return {q, k, qkv[2].view({B, S, -1, d})};
}

torch::Tensor GqaAttention::output(const torch::Tensor& o) {
  return wo->forward(fused_head_rms_norm(o.reshape({o.size(0), o.size(1), -1}), out_norm->weight, dims.d, eps));
}

torch::Tensor GqaAttention::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  const std::vector<torch::Tensor> qkv = queries_keys_values(x, positions);
  return output(causal_attention(qkv[0], qkv[1], qkv[2], 1.0 / std::sqrt(static_cast<double>(dims.d))));
}

// ---------------------------------------------------------------------------------------------
// MLA
LayerSharding MlaAttention::sharding(const Dims& m, int /*tp*/) {
  const auto col = ShardRole::kColumn, row = ShardRole::kRow, rep = ShardRole::kReplicated;
  return {{// The down-projections feed an RMSNorm over the whole latent: replicated.
           {"w_dq", m.E, m.dc, rep, 1, m.init_std},
           {"w_uq", m.dc, m.H * m.d, col, m.d, m.init_std},
           {"w_qr", m.dc, m.H * m.dr, col, m.dr, m.init_std},
           {"w_dkv", m.E, m.dc, rep, 1, m.init_std},
           {"w_uk", m.dc, m.H * m.d, col, m.d, m.init_std},
           {"w_uv", m.dc, m.H * m.d, col, m.d, m.init_std},
           // The decoupled RoPE key is one head shared by all: replicated.
           {"w_kr", m.E, m.dr, rep, 1, m.init_std},
           {"wo", m.H * m.d, m.E, row, m.d, m.out_std}},
          {{"q_norm.weight", false, 1, "query latent norm (d_c)"},
           {"kv_norm.weight", false, 1, "key/value latent norm (d_c)"},
           {"out_norm.weight", true, m.d, "per-head output norm, split with the heads"}}};
}

MlaAttention::MlaAttention(const ModelConfig& c, const ProjectionFactory& factory, const TensorParallelHooks& tp)
    : dims(model_dims(c)), eps(c.norm_eps), theta(c.rope_theta) {
  const LayerSharding shard = sharding(dims, tp.size);
  const auto& specs = shard.projections;
  w_dq = register_module("w_dq", make_projection(specs, "w_dq", factory));
  w_uq = register_module("w_uq", make_projection(specs, "w_uq", factory));
  w_qr = register_module("w_qr", make_projection(specs, "w_qr", factory));
  w_dkv = register_module("w_dkv", make_projection(specs, "w_dkv", factory));
  w_uk = register_module("w_uk", make_projection(specs, "w_uk", factory));
  w_uv = register_module("w_uv", make_projection(specs, "w_uv", factory));
  w_kr = register_module("w_kr", make_projection(specs, "w_kr", factory));
  wo = register_module("wo", make_projection(specs, "wo", factory));
  q_norm = register_module("q_norm", std::make_shared<RMSNormImpl>(dims.dc, eps));
  kv_norm = register_module("kv_norm", std::make_shared<RMSNormImpl>(dims.dc, eps));
  out_norm = register_module("out_norm", std::make_shared<RMSNormImpl>(dims.H * dims.d / tp.size, eps));
  mark_region_replicated(*this, shard, tp);
}

torch::Tensor MlaAttention::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), S = x.size(1), d = dims.d, dr = dims.dr;
  // The three projections of x: the query latent, the key/value latent, the shared RoPE key.
  const std::vector<torch::Tensor> from_x = project_same_input(x, x_projections());
  // Queries: c_q = RMSNorm(x W_dq); q = [c_q W_uq ; RoPE(c_q W_qr)] per head.
  const torch::Tensor c_q = q_norm->forward(from_x[0]);
  const std::vector<torch::Tensor> from_cq = project_same_input(c_q, cq_projections());
  const torch::Tensor q = fused_rope_concat(from_cq[0].view({B, S, -1, d}), from_cq[1].view({B, S, -1, dr}),
                                            positions, theta);
  // Keys and values from the cached latent c_kv; every head's key ends in the one shared RoPE
  // key k_r = RoPE(x W_kr).
  const torch::Tensor c_kv = kv_norm->forward(from_x[1]);
  const std::vector<torch::Tensor> from_ckv = project_same_input(c_kv, ckv_projections());
  const torch::Tensor k = fused_rope_concat(from_ckv[0].view({B, S, -1, d}), from_x[2].view({B, S, 1, dr}),
                                            positions, theta);
  const torch::Tensor v = from_ckv[1].view({B, S, -1, d});
  const torch::Tensor o = causal_attention(q, k, v, 1.0 / std::sqrt(static_cast<double>(d + dr)));
  return wo->forward(fused_head_rms_norm(o.reshape({B, S, -1}), out_norm->weight, d, eps));
}

// ---------------------------------------------------------------------------------------------
Attention make_attention(const std::string& type, const ModelConfig& config, const ProjectionFactory& factory,
                         const TensorParallelHooks& tp) {
  if (is_grouped_type(type)) return std::make_shared<GqaAttention>(config, grouped_kv_heads(type, config), factory, tp);
  if (type == "ccqa") return std::make_shared<CcqaAttention>(config, factory, tp);
  if (type == "mla") return std::make_shared<MlaAttention>(config, factory, tp);
  HYDRA_FAIL(common::ConfigError, "model.pattern: unknown attention type '" << type << "' (" << kAttentionTypes << ")");
}

double residual_scale(const std::string& type, const ModelConfig& config) {
  if (type == "mqa") return config.mqa.residual_scale;
  if (type == "gqa" || type == "mha") return config.gqa.residual_scale;
  if (type == "ccqa") return config.ccqa.residual_scale;
  return config.mla.residual_scale;
}

LayerSharding attention_sharding(const std::string& type, const ModelConfig& config, int tp) {
  const Dims dims = model_dims(config);
  if (is_grouped_type(type)) return GqaAttention::sharding(dims, grouped_kv_heads(type, config), tp);
  if (type == "ccqa") return CcqaAttention::sharding(dims, tp);
  if (type == "mla") return MlaAttention::sharding(dims, tp);
  HYDRA_FAIL(common::ConfigError, "model.pattern: unknown attention type '" << type << "' (" << kAttentionTypes << ")");
}

void mark_region_replicated(torch::nn::Module& module, const LayerSharding& sharding, const TensorParallelHooks& tp) {
  if (!tp.active()) return;
  const auto named = module.named_parameters();
  auto mark = [&](const std::string& name) {
    if (const at::Tensor* p = named.find(name)) {
      at::Tensor param = *p;
      tp.sum_grad(param);
    }
  };
  for (const auto& spec : sharding.projections) {
    if (spec.role != ShardRole::kReplicated) continue;
    mark(spec.name + ".weight");
    mark(spec.name + ".bias");
  }
  for (const auto& p : sharding.params) {
    if (!p.sharded) mark(p.name);  // absent ones (convolutions switched off) are skipped
  }
}

}  // namespace hydra::model
