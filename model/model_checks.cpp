#include "model/model_checks.h"

#include <cmath>
#include <set>

#include "common/errors.h"
#include "model/dims.h"

namespace hydra::model {

void check_model_config(const ModelConfig& c) {
  using common::ConfigError;
  if (c.dim < 1) HYDRA_FAIL(ConfigError, "model.dim: " << c.dim << " must be positive");
  if (c.heads < 1) HYDRA_FAIL(ConfigError, "model.heads: " << c.heads << " must be positive");
  if (c.kv_heads < 1) HYDRA_FAIL(ConfigError, "model.kv_heads: " << c.kv_heads << " must be positive");
  if (c.macro_blocks < 1) HYDRA_FAIL(ConfigError, "model.macro_blocks: " << c.macro_blocks << " must be positive");
  if (c.vocab_size < 1) HYDRA_FAIL(ConfigError, "model.vocab_size: " << c.vocab_size << " must be positive");
  if (c.mlp_ratio <= 0) HYDRA_FAIL(ConfigError, "model.mlp_ratio: " << c.mlp_ratio << " must be positive");
  if (c.dim % c.heads != 0) {
    HYDRA_FAIL(ConfigError, "model.heads: " << c.heads << " does not divide model.dim " << c.dim);
  }
  const int d = c.dim / c.heads;
  if (c.heads % c.kv_heads != 0) {
    HYDRA_FAIL(ConfigError, "model.kv_heads: " << c.kv_heads << " does not divide model.heads " << c.heads);
  }
  if (c.pattern.empty()) HYDRA_FAIL(ConfigError, "model.pattern: expected at least one layer");
  std::set<std::string> types;
  for (size_t i = 0; i < c.pattern.size(); ++i) {
    const std::string& t = c.pattern[i];
    if (!is_grouped_type(t) && t != "ccqa" && t != "mla") {
      HYDRA_FAIL(ConfigError, "model.pattern[" << i << "]: '" << t << "' is not one of " << kAttentionTypes);
    }
    types.insert(t);
  }
  for (const char* grouped : {"mqa", "gqa", "mha"}) {
    if (types.count(grouped) && d % 2 != 0) {
      HYDRA_FAIL(ConfigError, "model.dim / model.heads = " << d << ": a " << grouped
                                  << " layer's head size must be even (RoPE rotates pairs)");
    }
  }
  if (types.count("ccqa") && c.ccqa.compress == "heads") {
    const int C = c.ccqa.compression;
    if (C < 1 || c.heads % C != 0) {
      HYDRA_FAIL(ConfigError, "model.ccqa.compression: " << C << " must divide model.heads " << c.heads
                                  << " (model.ccqa.compress: heads keeps heads / compression query heads)");
    }
    const int q_heads = c.heads / C, kv_heads = (c.kv_heads + C - 1) / C;
    if (q_heads % kv_heads != 0) {
      HYDRA_FAIL(ConfigError, "model.ccqa.compress: heads gives " << q_heads << " query heads (model.heads / "
                                  << "compression) and " << kv_heads << " key/value heads (ceil(model.kv_heads / "
                                  << "compression)); the key/value heads must divide the query heads");
    }
    if (d % 2 != 0) {
      HYDRA_FAIL(ConfigError, "model.dim / model.heads = " << d << ": CCQA's head size must be even (RoPE and the "
                                  << "value shift split it in halves)");
    }
  } else if (types.count("ccqa")) {
    const int C = c.ccqa.compression;
    if (C < 1 || d % C != 0 || (d / C) % 2 != 0) {
      HYDRA_FAIL(ConfigError, "model.ccqa.compression: " << C << " must divide the head size model.dim / model.heads = "
                                  << d << " into an even latent head size (RoPE and the value shift split it in halves)");
    }
  }
  if (types.count("ccqa") && c.ccqa.conv_kernel < 1) {
    HYDRA_FAIL(ConfigError, "model.ccqa.conv_kernel: " << c.ccqa.conv_kernel << " must be at least 1");
  }
  if (types.count("mla")) {
    if (d % 4 != 0) {
      HYDRA_FAIL(ConfigError, "model.dim / model.heads = " << d
                                  << ": MLA needs a head size divisible by 4 (decoupled RoPE of d/2, rotated in pairs)");
    }
    const double latent = c.mla.latent_ratio * c.dim;
    if (latent < 1 || std::fabs(latent - std::round(latent)) > 1e-6) {
      HYDRA_FAIL(ConfigError, "model.mla.latent_ratio: " << c.mla.latent_ratio << " times model.dim " << c.dim
                                  << " must be a whole number of latent channels (at least 1)");
    }
  }
  if (c.mod.enabled) {
    if (!(c.mod.capacity > 0 && c.mod.capacity <= 1)) {
      HYDRA_FAIL(ConfigError, "model.mod.capacity: " << c.mod.capacity << " must be in (0, 1]");
    }
    if (c.mod.layers.empty()) HYDRA_FAIL(ConfigError, "model.mod.layers: empty while model.mod.enabled is true");
    std::set<int> seen;
    for (int layer : c.mod.layers) {
      if (layer < 0 || layer >= static_cast<int>(c.pattern.size())) {
        HYDRA_FAIL(ConfigError, "model.mod.layers: position " << layer << " is outside the macro-block of "
                                    << c.pattern.size() << " layers (model.pattern)");
      }
      if (!seen.insert(layer).second) HYDRA_FAIL(ConfigError, "model.mod.layers: position " << layer << " is listed twice");
    }
  }
  if (c.mor.recursions < 1) {
    HYDRA_FAIL(ConfigError, "model.mor.recursions: " << c.mor.recursions << " must be at least 1");
  }
  if (c.mod.aux_weight < 0) HYDRA_FAIL(ConfigError, "model.mod.aux_weight: " << c.mod.aux_weight << " must be >= 0");
  if (c.mor.aux_weight < 0) HYDRA_FAIL(ConfigError, "model.mor.aux_weight: " << c.mor.aux_weight << " must be >= 0");
}

void check_tensor_parallel(const ModelConfig& c, int tp) {
  using common::ConfigError;
  if (tp <= 1) return;
  if (c.heads % tp != 0) {
    HYDRA_FAIL(ConfigError, "parallel.tp: " << tp << " does not divide model.heads " << c.heads
                                << " (tensor parallelism splits the query heads)");
  }
  const bool gqa = has_layer_type(c, "gqa");
  if (gqa && c.kv_heads > 1 && c.kv_heads % tp != 0) {
    HYDRA_FAIL(ConfigError, "parallel.tp: " << tp << " does not divide model.kv_heads " << c.kv_heads
                                << ": a gqa layer splits its key/value heads with the query heads over tp (a tp "
                                << "that divides model.kv_heads, or model.kv_heads 1, which is mqa)");
  }
  // mha: H_kv = H, which tp divides (checked above).
  const bool ccqa = has_layer_type(c, "ccqa");
  const int C = c.ccqa.compression;
  if (ccqa && c.ccqa.compress == "heads" && C > 0 && (c.heads / C) % tp != 0) {
    HYDRA_FAIL(ConfigError, "parallel.tp: " << tp << " does not divide CCQA's " << c.heads / C
                                << " query heads (model.ccqa.compress: heads keeps model.heads / model.ccqa.compression = "
                                << c.heads << " / " << C << "; a tp that divides them, or model.ccqa.compress: head_dim)");
  }
}

}  // namespace hydra::model
