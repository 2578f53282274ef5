// Shared helpers of the model tests: small configs, the variant files, central differences.
#pragma once

#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <yaml-cpp/yaml.h>

#include "model/config.h"

namespace hydra::model::test {

// A small config with every attention type; float64 tests use it with a small vocabulary.
inline ModelConfig small_config(int vocab = 97) {
  ModelConfig c;
  c.dim = 32;
  c.heads = 4;     // d = 8
  c.kv_heads = 2;
  c.mlp_ratio = 2.0;
  c.macro_blocks = 1;
  c.vocab_size = vocab;
  c.ccqa.compression = 2;  // d_h = 4
  c.ccqa.compress = "head_dim";  // the layout these shapes were chosen for; heads has its own cases
  return c;
}

// The model section of configs/<name>.yaml, read with yaml-cpp directly so that these tests do
// not depend on the launcher (whose loader also validates the files against the schema).
inline ModelConfig load_variant(const std::string& name) {
  const YAML::Node m = YAML::LoadFile(std::string(HYDRA_SOURCE_DIR) + "/configs/" + name + ".yaml")["model"];
  ModelConfig c;
  c.dim = m["dim"].as<int>();
  c.heads = m["heads"].as<int>();
  c.kv_heads = m["kv_heads"].as<int>();
  c.mlp_ratio = m["mlp_ratio"].as<double>();
  c.macro_blocks = m["macro_blocks"].as<int>();
  c.pattern = m["pattern"].as<std::vector<std::string>>();
  c.vocab_size = m["vocab_size"].as<int>();
  c.tie_embeddings = m["tie_embeddings"].as<bool>();
  const YAML::Node cc = m["ccqa"];
  c.ccqa.compression = cc["compression"].as<int>();
  if (cc["compress"]) c.ccqa.compress = cc["compress"].as<std::string>();
  c.ccqa.conv_kernel = cc["conv_kernel"].as<int>();
  c.ccqa.use_convs = cc["use_convs"].as<bool>();
  c.ccqa.qk_mean = cc["qk_mean"].as<bool>();
  c.ccqa.qk_mean_gain = cc["qk_mean_gain"].as<double>();
  c.ccqa.value_shift = cc["value_shift"].as<bool>();
  c.mla.latent_ratio = m["mla"]["latent_ratio"].as<double>();
  c.mod.enabled = m["mod"]["enabled"].as<bool>();
  c.mod.capacity = m["mod"]["capacity"].as<double>();
  c.mod.layers = m["mod"]["layers"].as<std::vector<int>>();
  c.mod.aux_weight = m["mod"]["aux_weight"].as<double>();
  c.mor.recursions = m["mor"]["recursions"].as<int>();
  c.mor.aux_weight = m["mor"]["aux_weight"].as<double>();
  return c;
}

inline int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

// Copies every parameter of `from` into the parameter of the same name in `to` (those present).
inline void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto dst = to.named_parameters();
  for (const auto& p : from.named_parameters()) {
    if (auto* t = dst.find(p.key())) t->copy_(p.value());
  }
}

// Compares autograd gradients of `loss()` with central differences at `samples` random
// coordinates of every tensor in `inputs` (float64). loss() must be deterministic.
inline void expect_gradients_match(const std::function<torch::Tensor()>& loss, std::vector<torch::Tensor> inputs,
                                   int samples = 4, double eps = 1e-6, double tol = 1e-6) {
  for (auto& t : inputs) {
    if (t.grad().defined()) t.mutable_grad().zero_();
  }
  loss().backward();
  torch::manual_seed(1234);
  for (auto& t : inputs) {
    ASSERT_TRUE(t.grad().defined());
    const torch::Tensor grad = t.grad().clone().view(-1);
    auto flat = t.view(-1);
    for (int i = 0; i < samples; ++i) {
      const int64_t j = torch::randint(flat.numel(), {1}).item<int64_t>();
      double plus, minus;
      {
        torch::NoGradGuard no_grad;
        const double orig = flat[j].item<double>();
        flat[j].fill_(orig + eps);
        plus = loss().item<double>();
        flat[j].fill_(orig - eps);
        minus = loss().item<double>();
        flat[j].fill_(orig);
      }
      const double numeric = (plus - minus) / (2 * eps);
      const double analytic = grad[j].item<double>();
      EXPECT_NEAR(analytic, numeric, tol * std::max(1.0, std::fabs(numeric)))
          << "coordinate " << j << " of a tensor of shape " << t.sizes();
    }
  }
}

// True when a and b hold the same bits (same shape, every element equal).
inline bool bit_identical(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

}  // namespace hydra::model::test
