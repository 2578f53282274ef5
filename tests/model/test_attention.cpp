// Layers and attention types: causality, gradients (central differences, float64), MQA, GQA, MHA
// and CCQA against an independently written GQA layer, value shift, RoPE shift invariance.
#include <algorithm>
#include <cmath>

#include <torch/csrc/autograd/autograd.h>

#include "model/attention.h"
#include "model/attention_core.h"
#include "model/causal_conv_products.h"
#include "model/layers.h"
#include "model_test_util.h"

namespace hydra::model {
namespace {

using test::small_config;

torch::Tensor positions_for(int64_t B, int64_t S, int64_t offset = 0) {
  return (torch::arange(S, torch::kLong) + offset).unsqueeze(0).expand({B, S}).contiguous();
}

// `type`: an attention type, or "ccqa-heads" for CCQA with model.ccqa.compress: heads.
Attention build(const std::string& type, ModelConfig c) {
  torch::manual_seed(7);
  const bool heads = type == "ccqa-heads";
  if (heads) c.ccqa.compress = "heads";
  Attention a = make_attention(heads ? "ccqa" : type, c, default_projection_factory());
  a->to(torch::kDouble);
  // Move norms, convolutions and temperatures off their identity init so the tests see them.
  torch::NoGradGuard no_grad;
  for (auto& p : a->named_parameters()) {
    if (p.key().find("norm") != std::string::npos || p.key() == "tau" || p.key().find("conv") != std::string::npos) {
      p.value().add_(0.1 * torch::randn_like(p.value()));
    }
  }
  return a;
}

class AttentionTypes : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionTypes, CausalOutputsBitIdentical) {
  const ModelConfig c = small_config();
  Attention a = build(GetParam(), c);
  torch::NoGradGuard no_grad;
  const int64_t B = 2, S = 12, t = 5;
  const torch::Tensor x = torch::randn({B, S, c.dim}, torch::kDouble);
  torch::Tensor x2 = x.clone();
  x2.narrow(1, t + 1, S - t - 1).copy_(torch::randn({B, S - t - 1, c.dim}, torch::kDouble));
  const auto pos = positions_for(B, S);
  const torch::Tensor y = a->forward(x, pos), y2 = a->forward(x2, pos);
  EXPECT_TRUE(test::bit_identical(y.narrow(1, 0, t + 1), y2.narrow(1, 0, t + 1)));
  EXPECT_FALSE(torch::allclose(y.narrow(1, t + 1, S - t - 1), y2.narrow(1, t + 1, S - t - 1)));
}

TEST_P(AttentionTypes, GradientsMatchCentralDifferences) {
  const ModelConfig c = small_config();
  Attention a = build(GetParam(), c);
  const auto pos = positions_for(2, 6);
  const torch::Tensor x = torch::randn({2, 6, c.dim}, torch::kDouble).requires_grad_(true);
  const torch::Tensor w = torch::randn({2, 6, c.dim}, torch::kDouble);
  std::vector<torch::Tensor> inputs = {x};
  for (auto& p : a->parameters()) inputs.push_back(p);
  test::expect_gradients_match([&] { return (a->forward(x, pos) * w).sum(); }, inputs, 2);
}

TEST_P(AttentionTypes, ShiftingAllPositionsLeavesOutputsUnchanged) {
  // RoPE scores depend on position differences only: the same offset everywhere changes
  // nothing but rounding.
  const ModelConfig c = small_config();
  Attention a = build(GetParam(), c);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 10, c.dim}, torch::kDouble);
  const torch::Tensor y = a->forward(x, positions_for(2, 10));
  const torch::Tensor y_shifted = a->forward(x, positions_for(2, 10, 1000));
  EXPECT_TRUE(torch::allclose(y, y_shifted, 1e-9, 1e-9));
}

INSTANTIATE_TEST_SUITE_P(Model, AttentionTypes, ::testing::Values("mqa", "gqa", "mha", "ccqa", "ccqa-heads", "mla"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(ModelLayers, MlpGradientsMatchCentralDifferences) {
  const ModelConfig c = small_config();
  torch::manual_seed(3);
  auto mlp = std::make_shared<MlpImpl>(model_dims(c), default_projection_factory());
  mlp->to(torch::kDouble);
  const torch::Tensor x = torch::randn({2, 5, c.dim}, torch::kDouble).requires_grad_(true);
  std::vector<torch::Tensor> inputs = {x};
  for (auto& p : mlp->parameters()) inputs.push_back(p);
  test::expect_gradients_match([&] { return mlp->forward(x).pow(2).sum(); }, inputs, 3);
}

TEST(ModelLayers, MlpWidthIsRoundedUpTo64) {
  ModelConfig c = small_config();
  c.dim = 96;
  c.mlp_ratio = 2.5;  // 240 -> 256
  EXPECT_EQ(model_dims(c).F, 256);
}

// ---------------------------------------------------------------------------------------------
// CCQA against a plain GQA layer with QK RMS-norm, written here from scratch with loops.

torch::Tensor naive_rms(const torch::Tensor& v, const torch::Tensor& w) {
  return v / torch::sqrt(v.pow(2).mean() + 1e-6) * w;
}

torch::Tensor naive_rope(const torch::Tensor& v, int64_t pos, double theta) {
  const int64_t D = v.size(0), half = D / 2;
  torch::Tensor out = v.clone();
  for (int64_t i = 0; i < half; ++i) {
    const double a = pos * std::pow(theta, -2.0 * i / D);
    out[i] = v[i] * std::cos(a) - v[i + half] * std::sin(a);
    out[i + half] = v[i + half] * std::cos(a) + v[i] * std::sin(a);
  }
  return out;
}

// Both layouts: `head_dim` (4 heads of d_h 4 over 2 KV heads) and `heads` (2 query heads and
// ceil(2 / 2) = 1 KV head, all of the full d 8), against per-token GQA written out by hand.
class CcqaLayouts : public ::testing::TestWithParam<std::string> {};

TEST_P(CcqaLayouts, WithoutConvsMeanAndShiftEqualsPlainGqa) {
  ModelConfig c = small_config();
  c.ccqa.compress = GetParam();
  c.ccqa.use_convs = false;
  c.ccqa.qk_mean = false;
  c.ccqa.value_shift = false;
  torch::manual_seed(11);
  auto a = std::make_shared<CcqaAttention>(c, default_projection_factory());
  a->to(torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    a->q_norm->weight.add_(0.1 * torch::randn_like(a->q_norm->weight));
    a->k_norm->weight.add_(0.1 * torch::randn_like(a->k_norm->weight));
    a->out_norm->weight.add_(0.1 * torch::randn_like(a->out_norm->weight));
  }
  torch::NoGradGuard no_grad;
  const bool by_heads = GetParam() == "heads";
  const int64_t S = 6, H = by_heads ? 2 : 4, Hkv = by_heads ? 1 : 2, dh = by_heads ? 8 : 4;  // (small_config: C 2, d 8)
  ASSERT_EQ(model_dims(c).Hc, H);
  ASSERT_EQ(model_dims(c).Hkv, Hkv);
  ASSERT_EQ(model_dims(c).dh, dh);
  EXPECT_EQ(a->named_parameters()["wq.weight"].size(0), H * dh);
  EXPECT_EQ(a->named_parameters()["wk.weight"].size(0), Hkv * dh);
  const torch::Tensor x = torch::randn({1, S, c.dim}, torch::kDouble);
  const torch::Tensor y = a->forward(x, positions_for(1, S))[0];

  const torch::Tensor Wq = a->named_parameters()["wq.weight"], Wk = a->named_parameters()["wk.weight"];
  const torch::Tensor Wv = a->named_parameters()["wv.weight"], Wo = a->named_parameters()["wo.weight"];
  const torch::Tensor qn = a->q_norm->weight, kn = a->k_norm->weight, on = a->out_norm->weight;
  for (int64_t t = 0; t < S; ++t) {
    std::vector<torch::Tensor> heads;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t j = h / (H / Hkv);  // the KV head of query head h
      const torch::Tensor q = naive_rope(naive_rms(Wq.narrow(0, h * dh, dh).mv(x[0][t]), qn), t, c.rope_theta);
      std::vector<double> scores;
      for (int64_t s = 0; s <= t; ++s) {
        const torch::Tensor k = naive_rope(naive_rms(Wk.narrow(0, j * dh, dh).mv(x[0][s]), kn), s, c.rope_theta);
        scores.push_back(q.dot(k).item<double>() / std::sqrt(static_cast<double>(dh)));
      }
      const double mx = *std::max_element(scores.begin(), scores.end());
      double z = 0;
      for (double& sc : scores) z += (sc = std::exp(sc - mx));
      torch::Tensor o = torch::zeros({dh}, torch::kDouble);
      for (int64_t s = 0; s <= t; ++s) o += scores[s] / z * Wv.narrow(0, j * dh, dh).mv(x[0][s]);
      heads.push_back(naive_rms(o, on.narrow(0, h * dh, dh)));
    }
    const torch::Tensor expected = Wo.mv(torch::cat(heads));
    EXPECT_TRUE(torch::allclose(y[t], expected, 1e-10, 1e-10)) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Model, CcqaLayouts, ::testing::Values("head_dim", "heads"));

TEST(ModelCcqa, IdentityConvolutionsEqualNoConvolutions) {
  ModelConfig with = small_config(), without = small_config();
  without.ccqa.use_convs = false;
  torch::manual_seed(5);
  auto a = std::make_shared<CcqaAttention>(with, default_projection_factory());
  auto b = std::make_shared<CcqaAttention>(without, default_projection_factory());
  a->to(torch::kDouble);
  b->to(torch::kDouble);
  test::copy_parameters(*a, *b);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 9, with.dim}, torch::kDouble);
  const auto pos = positions_for(2, 9);
  EXPECT_TRUE(torch::allclose(a->forward(x, pos), b->forward(x, pos), 1e-12, 1e-12));
}

// The convolutions as tensor products (the fused path's form where the prologue kernels do not
// take the head size) against docs/MODEL.md's sum written out, in float64, and their gradients
// against conv1d's (CausalConvImpl::forward), for depthwise and grouped filters, kernels 1-3 and
// sequences shorter than the kernel.
TEST(ModelCcqa, ConvolutionAsProductsEqualsTheFormula) {
  torch::manual_seed(11);
  struct Case { int64_t B, S, C, g, K; };
  for (const Case c : {Case{2, 7, 12, 1, 3}, Case{1, 9, 12, 4, 3}, Case{2, 2, 8, 8, 3}, Case{1, 1, 6, 3, 2},
                       Case{3, 5, 16, 8, 1}, Case{1, 6, 256, 128, 3}}) {
    SCOPED_TRACE("B " + std::to_string(c.B) + " S " + std::to_string(c.S) + " C " + std::to_string(c.C) + " g " +
                 std::to_string(c.g) + " K " + std::to_string(c.K));
    CausalConvImpl conv(c.C, c.g, c.K);
    conv.to(torch::kDouble);
    {
      torch::NoGradGuard no_grad;
      conv.weight.copy_(torch::randn_like(conv.weight));
      conv.bias.copy_(torch::randn_like(conv.bias));
    }
    const torch::Tensor x = torch::randn({c.B, c.S, c.C}, torch::kDouble).requires_grad_(true);
    const torch::Tensor y = causal_conv_products(x, conv.weight, conv.bias);
    // conv(x)[t, c] = b[c] + sum_m sum_i W[c, i, m] x[t - (K-1) + m, g floor(c / g) + i], x[< 0] = 0.
    const auto xa = x.accessor<double, 3>();
    const auto w = conv.weight.accessor<double, 3>();
    const auto bias = conv.bias.accessor<double, 1>();
    const auto ya = y.accessor<double, 3>();
    double worst = 0;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < c.S; ++t)
        for (int64_t ch = 0; ch < c.C; ++ch) {
          double expected = bias[ch];
          for (int64_t m = 0; m < c.K; ++m) {
            const int64_t src = t - (c.K - 1) + m;
            if (src < 0) continue;
            for (int64_t i = 0; i < c.g; ++i) expected += w[ch][i][m] * xa[b][src][c.g * (ch / c.g) + i];
          }
          worst = std::max(worst, std::abs(ya[b][t][ch] - expected));
        }
    EXPECT_LT(worst, 1e-12);
    const torch::Tensor dy = torch::randn_like(y);
    const auto grads = torch::autograd::grad({y}, {x, conv.weight, conv.bias}, {dy});
    const auto ref = torch::autograd::grad({conv.forward(x)}, {x, conv.weight, conv.bias}, {dy});
    for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(torch::allclose(grads[i], ref[i], 1e-10, 1e-12)) << "gradient " << i;
  }
}

// CCQA's pair of convolutions through conv2_operand (the fused path's form at head size 128):
// the operand against its definition (row (b S + t) of group j holds, at i K + m, conv1's output
// for channel j g + i at token t - K + 1 + m, zero before the first token, not conv1's bias; then
// the bias columns), and the pair's values and gradients against two conv1d layers, in float64,
// with conv2's bias in the product (g >= 8) and added after (g < 8).
TEST(ModelCcqa, ConvolutionPairThroughItsOperandEqualsTwoConvolutions) {
  torch::manual_seed(12);
  struct Case { int64_t B, S, C, g, K; };
  for (const Case c : {Case{2, 7, 12, 4, 3}, Case{1, 2, 16, 8, 3}, Case{3, 5, 6, 3, 1}, Case{1, 9, 256, 128, 4}}) {
    SCOPED_TRACE("B " + std::to_string(c.B) + " S " + std::to_string(c.S) + " C " + std::to_string(c.C) + " g " +
                 std::to_string(c.g) + " K " + std::to_string(c.K));
    CausalConvImpl conv1(c.C, 1, c.K), conv2(c.C, c.g, c.K);
    conv1.to(torch::kDouble);
    conv2.to(torch::kDouble);
    {
      torch::NoGradGuard no_grad;
      for (CausalConvImpl* conv : {&conv1, &conv2}) {
        conv->weight.copy_(torch::randn_like(conv->weight));
        conv->bias.copy_(torch::randn_like(conv->bias));
      }
    }
    const torch::Tensor x = torch::randn({c.B, c.S, c.C}, torch::kDouble).requires_grad_(true);
    const int64_t cols = c.g >= 8 ? 8 : 0, groups = c.C / c.g;
    const torch::Tensor a = conv2_operand(x, conv1.weight, conv1.bias, c.g, cols);
    ASSERT_EQ(a.sizes(), at::IntArrayRef({groups, c.B * c.S, c.g * c.K + cols}));
    const torch::Tensor taps = a.narrow(2, 0, c.g * c.K).reshape({groups, c.B, c.S, c.g, c.K});
    const torch::Tensor y1 = conv1.forward(x).detach().view({c.B, c.S, groups, c.g});
    for (int64_t t = 0; t < c.S; ++t)
      for (int64_t m = 0; m < c.K; ++m) {
        const int64_t src = t - (c.K - 1) + m;
        const torch::Tensor expected =
            src < 0 ? torch::zeros({c.B, groups, c.g}, torch::kDouble) : y1.select(1, src);  // [B, groups, g]
        EXPECT_TRUE(torch::allclose(taps.select(2, t).select(-1, m).transpose(0, 1), expected, 1e-12, 1e-12))
            << t << " " << m;
      }
    if (cols > 0) {
      const torch::Tensor bias_columns = a.narrow(2, c.g * c.K, cols);
      EXPECT_TRUE(torch::equal(bias_columns, torch::full_like(bias_columns, 0.125)));
    }
    const torch::Tensor y = causal_conv_pair_products(x, conv1.weight, conv1.bias, conv2.weight, conv2.bias);
    const torch::Tensor ref = conv2.forward(conv1.forward(x));
    EXPECT_TRUE(torch::allclose(y, ref, 1e-10, 1e-12));
    const torch::Tensor dy = torch::randn_like(y);
    const std::vector<torch::Tensor> inputs = {x, conv1.weight, conv1.bias, conv2.weight, conv2.bias};
    const auto grads = torch::autograd::grad({y}, inputs, {dy});
    const auto expected = torch::autograd::grad({ref}, inputs, {dy});
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_TRUE(torch::allclose(grads[i], expected[i], 1e-10, 1e-12)) << "gradient " << i;
    }
  }
}

TEST(ModelCcqa, ValueShiftTakesTheSecondHalfFromThePreviousToken) {
  const ModelConfig c = small_config();
  torch::manual_seed(9);
  auto a = std::make_shared<CcqaAttention>(c, default_projection_factory());
  a->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  const int64_t S = 7, t = 3, half = model_dims(c).dh / 2;
  const torch::Tensor x = torch::randn({1, S, c.dim}, torch::kDouble);
  torch::Tensor x2 = x.clone();
  x2[0][t].add_(1.0);  // change token t only
  const torch::Tensor v = a->values(a->wv->forward(x)), v2 = a->values(a->wv->forward(x2));  // [1, S, H_kv, d_h]
  const auto first = [&](const torch::Tensor& u, int64_t s) { return u[0][s].narrow(-1, 0, half); };
  const auto second = [&](const torch::Tensor& u, int64_t s) { return u[0][s].narrow(-1, half, half); };
  for (int64_t s = 0; s < S; ++s) {
    // First halves move only at t, second halves only at t + 1.
    EXPECT_EQ(torch::equal(first(v, s), first(v2, s)), s != t) << s;
    EXPECT_EQ(torch::equal(second(v, s), second(v2, s)), s != t + 1) << s;
  }
  // x_(-1) = 0: the second half of token 0 is zero.
  EXPECT_TRUE(torch::equal(second(v, 0), torch::zeros_like(second(v, 0))));
}

// ---------------------------------------------------------------------------------------------
// The grouped-query family (mqa: 1 KV head, gqa: model.kv_heads, mha: H) against the same
// per-token loops, with head size d: query head h reads KV head floor(h / (H / H_kv)).
class GroupedKinds : public ::testing::TestWithParam<std::string> {};

TEST_P(GroupedKinds, EqualsPerTokenGqaWrittenOut) {
  ModelConfig c = small_config();
  c.heads = 8;     // d = 4
  c.kv_heads = 4;  // gqa: G = 2
  const std::string type = GetParam();
  const int64_t H = 8, d = 4, S = 6, Hkv = type == "mqa" ? 1 : type == "gqa" ? 4 : 8;
  Attention a = build(type, c);
  torch::NoGradGuard no_grad;
  const auto named = a->named_parameters();
  const torch::Tensor Wq = named["wq.weight"], Wk = named["wk.weight"], Wv = named["wv.weight"];
  const torch::Tensor Wo = named["wo.weight"], qn = named["q_norm.weight"], kn = named["k_norm.weight"];
  const torch::Tensor on = named["out_norm.weight"];
  ASSERT_EQ(Wq.size(0), H * d);
  ASSERT_EQ(Wk.size(0), Hkv * d);
  ASSERT_EQ(Wv.size(0), Hkv * d);
  ASSERT_EQ(qn.size(0), d);
  const torch::Tensor x = torch::randn({2, S, c.dim}, torch::kDouble);
  const torch::Tensor pos = positions_for(2, S, 3);
  const torch::Tensor y = a->forward(x, pos);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < S; ++t) {
      std::vector<torch::Tensor> heads;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t j = h / (H / Hkv);
        const torch::Tensor q = naive_rope(naive_rms(Wq.narrow(0, h * d, d).mv(x[b][t]), qn), t + 3, c.rope_theta);
        std::vector<double> scores;
        for (int64_t s = 0; s <= t; ++s) {
          const torch::Tensor k = naive_rope(naive_rms(Wk.narrow(0, j * d, d).mv(x[b][s]), kn), s + 3, c.rope_theta);
          scores.push_back(q.dot(k).item<double>() / std::sqrt(static_cast<double>(d)));
        }
        const double mx = *std::max_element(scores.begin(), scores.end());
        double z = 0;
        for (double& sc : scores) z += (sc = std::exp(sc - mx));
        torch::Tensor o = torch::zeros({d}, torch::kDouble);
        for (int64_t s = 0; s <= t; ++s) o += scores[s] / z * Wv.narrow(0, j * d, d).mv(x[b][s]);
        heads.push_back(naive_rms(o, on.narrow(0, h * d, d)));
      }
      EXPECT_TRUE(torch::allclose(y[b][t], Wo.mv(torch::cat(heads)), 1e-10, 1e-10)) << type << " " << b << " " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Model, GroupedKinds, ::testing::Values("mqa", "gqa", "mha"));

// One implementation: gqa with model.kv_heads 1 is mqa, and with model.kv_heads = H is mha, bit
// for bit (same parameters, names and random draws).
TEST(ModelGqa, KvHeadsOneIsMqaAndKvHeadsHIsMha) {
  const torch::Tensor x = torch::randn({2, 7, 32}, torch::kDouble);
  const torch::Tensor pos = positions_for(2, 7);
  torch::NoGradGuard no_grad;
  for (const auto& [kv_heads, other] : {std::pair{1, "mqa"}, std::pair{4, "mha"}}) {
    ModelConfig c = small_config();
    c.kv_heads = kv_heads;
    Attention gqa = build("gqa", c), same = build(other, c);
    const auto mine = gqa->named_parameters(), theirs = same->named_parameters();
    ASSERT_EQ(mine.size(), theirs.size());
    for (const auto& p : mine) EXPECT_TRUE(torch::equal(p.value(), theirs[p.key()])) << other << " " << p.key();
    EXPECT_TRUE(test::bit_identical(gqa->forward(x, pos), same->forward(x, pos))) << other;
  }
}

TEST(ModelAttentionCore, GqaMatchesRepeatedKeysAndValues) {
  torch::manual_seed(2);
  const torch::Tensor q = torch::randn({2, 5, 6, 4}, torch::kDouble);
  const torch::Tensor k = torch::randn({2, 5, 2, 4}, torch::kDouble);
  const torch::Tensor v = torch::randn({2, 5, 2, 3}, torch::kDouble);
  const torch::Tensor out = causal_attention(q, k, v, 0.5);
  const torch::Tensor out_rep = causal_attention(q, k.repeat_interleave(3, 2), v.repeat_interleave(3, 2), 0.5);
  EXPECT_TRUE(torch::allclose(out, out_rep, 1e-12, 1e-12));
  // Token 0 sees only itself: its output is its own value.
  EXPECT_TRUE(torch::allclose(out.select(1, 0), v.select(1, 0).repeat_interleave(3, 1), 1e-12, 1e-12));
}

}  // namespace
}  // namespace hydra::model
