#include "model/model_checks.h"

#include "common/errors.h"

namespace hydra::model {

void check_model_config(const ModelConfig& c) {
  using common::ConfigError;
  if (c.dim % c.heads != 0) {
    HYDRA_FAIL(ConfigError, "model.heads " << c.heads << " does not divide model.dim " << c.dim);
  }
  const int head_dim = c.dim / c.heads;
  if (head_dim % 2 != 0) {
    HYDRA_FAIL(ConfigError, "model.dim / model.heads = " << head_dim << " must be even (RoPE rotates pairs)");
  }
  if (c.heads % c.kv_heads != 0) {
    HYDRA_FAIL(ConfigError, "model.kv_heads " << c.kv_heads << " does not divide model.heads " << c.heads);
  }
  if (c.pattern.empty()) HYDRA_FAIL(ConfigError, "model.pattern: expected at least one layer");
  bool has_ccqa = false;
  for (const auto& type : c.pattern) has_ccqa |= type == "ccqa";
  if (has_ccqa) {
    const int latent = head_dim / c.ccqa.compression;
    if (head_dim % c.ccqa.compression != 0 || latent % 2 != 0) {
      HYDRA_FAIL(ConfigError, "model.ccqa.compression " << c.ccqa.compression << ": head size " << head_dim
                                  << " must split into an even latent head size (d % C == 0, d / C even)");
    }
  }
  if (c.mod.enabled) {
    for (int layer : c.mod.layers) {
      if (layer >= static_cast<int>(c.pattern.size())) {
        HYDRA_FAIL(ConfigError, "model.mod.layers: position " << layer << " is outside the macro-block of "
                                    << c.pattern.size() << " layers (model.pattern)");
      }
    }
  }
  const int mla_latent = static_cast<int>(c.mla.latent_ratio * c.dim);
  if (mla_latent < 1) HYDRA_FAIL(ConfigError, "model.mla.latent_ratio " << c.mla.latent_ratio << " leaves no latent");
}

}  // namespace hydra::model
