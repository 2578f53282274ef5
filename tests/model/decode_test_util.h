// Shared by the decoding tests (test_decode.cpp on the CPU, test_decode_gpu.cpp on CUDA): tiny
// random models with every parameter away from its init, and the largest difference between
// cached decoding and the full forward with causal routing.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "model/decode.h"
#include "model/hydra_model.h"
#include "model_test_util.h"

namespace hydra::model::test {

constexpr int kVocab = 61;
constexpr int64_t kTokens = 24;

struct Shape {
  std::vector<std::string> pattern;
  bool mod = false;
  int recursions = 1;
  std::string compress = "head_dim";
  int dim = 32;                            // 4 heads; CCQA's d_h = dim / 8 (C 2)
  std::string ccqa_kernel = "reference";   // fused: the CUDA kernels (d_h 16, 32 or 64)
};

inline ModelConfig decode_config(const Shape& s) {
  ModelConfig c = small_config(kVocab);
  c.pattern = s.pattern;
  c.macro_blocks = 2;
  c.mod.enabled = s.mod;
  c.mod.layers.clear();
  for (int l = 1; l < static_cast<int>(s.pattern.size()); l += 2) c.mod.layers.push_back(l);
  if (c.mod.layers.empty()) c.mod.layers = {0};
  c.mor.recursions = s.recursions;
  c.ccqa.compress = s.compress;
  c.ccqa.kernel = s.ccqa_kernel;
  c.dim = s.dim;
  c.tie_embeddings = false;
  return c;
}

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Every parameter away from its init: projections of unit gain (activations of order 1, so
// that attention is far from uniform), convolutions with every tap, temperatures, norm gains,
// and routers with bias 0 whose scores are of order 1 (about half the tokens chosen).
inline void randomize(HydraModelImpl& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  const double E = static_cast<double>(m.dims.E);
  for (auto& item : m.named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor t = item.value();
    if (name.find("router") != std::string::npos) {
      if (ends_with(name, "bias")) t.zero_(); else t.normal_(0.0, 1.0 / std::sqrt(E));
    } else if (ends_with(name, "norm.weight")) {
      t.uniform_(0.5, 1.5);
    } else if (name.find("conv") != std::string::npos) {
      t.normal_(0.0, 0.5);
    } else if (ends_with(name, "tau")) {
      t.normal_(0.0, 0.3);
    } else if (name == "embed.weight") {
      t.normal_(0.0, 1.0);
    } else if (t.dim() == 2) {
      t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(t.size(1))));
    }
  }
}

inline HydraModel random_model(const Shape& s, torch::Dtype dtype, torch::Device device = torch::kCPU) {
  torch::manual_seed(0);
  auto m = std::make_shared<HydraModelImpl>(decode_config(s));
  randomize(*m);
  m->to(device, dtype);
  m->eval();
  return m;
}

// CCQA's switches and kernel sizes, variant 0 .. kCcqaVariants - 1 (K 1 keeps no history, K 4,
// no convolutions, no value shift, no qk-mean, no post-mix norm): a float64 model of CCQA and
// MQA layers with MoD.
constexpr int kCcqaVariants = 6;
inline HydraModel ccqa_variant_model(int variant) {
  ModelConfig c = decode_config({{"ccqa", "mqa"}, /*mod=*/true});
  if (variant == 0) c.ccqa.conv_kernel = 1;
  if (variant == 1) c.ccqa.conv_kernel = 4;
  if (variant == 2) c.ccqa.use_convs = false;
  if (variant == 3) c.ccqa.value_shift = false;
  if (variant == 4) c.ccqa.qk_mean = false;
  if (variant == 5) c.ccqa.post_mix_norm = false;
  torch::manual_seed(0);
  auto m = std::make_shared<HydraModelImpl>(c);
  randomize(*m);
  m->to(torch::kDouble);
  return m;
}

inline torch::Tensor random_tokens(int64_t n, int seed = 3, torch::Device device = torch::kCPU) {
  torch::manual_seed(seed);
  return torch::randint(kVocab, {n}, torch::kLong).to(device);
}

inline ModelOutput full_forward(HydraModel& m, const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  ForwardOptions causal;
  causal.causal_routing = true;
  return m->forward(tokens.unsqueeze(0), {}, causal);
}

// The largest |cached - full| over the positions from prefix-1 on, relative to the largest full
// logit (at least 1): prefill of the first `prefix` tokens, then one decode_step per token.
inline double max_decode_error(HydraModel& m, const torch::Tensor& tokens, int64_t prefix) {
  const torch::Tensor full = full_forward(m, tokens).logits.select(0, 0).narrow(-1, 0, kVocab).to(torch::kDouble);
  Decoded d = prefill(*m, tokens.narrow(0, 0, prefix), tokens.size(0));
  double worst = 0;
  auto compare = [&](const torch::Tensor& logits, int64_t t) {
    const torch::Tensor got = logits.narrow(0, 0, kVocab).to(torch::kDouble);
    const torch::Tensor want = full.select(0, t);
    const double scale = std::max(1.0, want.abs().max().item<double>());
    worst = std::max(worst, (got - want).abs().max().item<double>() / scale);
  };
  compare(d.logits, prefix - 1);
  for (int64_t t = prefix; t < tokens.size(0); ++t) compare(decode_step(*m, d.state, tokens[t].item<int64_t>()), t);
  EXPECT_EQ(d.state.length(), tokens.size(0));
  return worst;
}

}  // namespace hydra::model::test
