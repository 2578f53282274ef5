// The model section of the run config (docs/INTERFACE.md, docs/MODEL.md). Plain data: the
// launcher fills and validates it (launcher/config_schema.cpp holds defaults and ranges).
#pragma once

#include <string>
#include <vector>

namespace hydra::model {

struct MqaConfig {
  double residual_scale = 1.0;    // alpha: h = x + alpha * Attn(RMSNorm(x)) (docs/MODEL.md "Layer")
};

struct GqaConfig {
  double residual_scale = 1.0;    // alpha of gqa and mha layers (mha is gqa with H_kv = H)
};

struct CcqaConfig {
  int compression = 4;            // C
  // What C compresses (docs/MODEL.md, CCQA): heads (the default): H / C query heads and
  // ceil(H_kv / C) key/value heads of the full size d; head_dim: H heads of d / C. heads became
  // the default when it trained better in both seeds of docs/QUALITY.md's 100M comparison.
  std::string compress = "heads";
  int conv_kernel = 3;            // K of both causal convolutions
  bool use_convs = true;
  bool qk_mean = true;
  double qk_mean_gain = 0.25;     // gamma
  bool value_shift = true;
  bool post_mix_norm = true;      // step 5; off (an ablation) keeps CCQA on the reference ops
  // fused|reference. fused: CUDA build only; the launcher makes it the default there when
  // train.device is cuda (launcher/config_load.cpp), so this struct's default stays the same in
  // every translation unit of both builds.
  std::string kernel = "reference";
  double residual_scale = 0.5;    // alpha of CCQA layers
};

struct MlaConfig {
  double latent_ratio = 0.5;      // d_c = d_cq = latent_ratio * E
  double residual_scale = 0.5;    // alpha of MLA layers
};

struct ModConfig {
  bool enabled = false;
  double capacity = 0.75;
  std::vector<int> layers = {1, 3, 5, 7};  // positions within a macro-block
  double aux_weight = 0.01;
};

struct MorConfig {
  int recursions = 1;             // R; 1 = off
  double aux_weight = 0.01;
};

struct ModelConfig {
  std::string preset;             // name of a variant in configs/, or empty
  int dim = 0;                    // E
  int heads = 0;                  // H
  int kv_heads = 0;               // H_kv of CCQA and GQA (MQA has 1, MHA and MLA have H)
  double mlp_ratio = 4.0;
  int macro_blocks = 0;
  std::vector<std::string> pattern = {"mqa", "mqa", "ccqa", "ccqa", "ccqa", "mla", "mqa", "mla"};
  int vocab_size = 0;             // before padding to a multiple of 128 x tp
  bool tie_embeddings = false;
  double init_std = 0.02;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  MqaConfig mqa;
  GqaConfig gqa;
  CcqaConfig ccqa;
  MlaConfig mla;
  ModConfig mod;
  MorConfig mor;
};

}  // namespace hydra::model
