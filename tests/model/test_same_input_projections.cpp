// project_same_input (model/same_input_projections.h) against the projections run one by one,
// autograd adding the input gradients: float64 outputs bit for bit, gradients of x and of every
// weight to 1e-12; one autograd node whose inputs are x and the weights (no add node left for
// x's gradient); and the fallback to separate forwards when a projection is not a plain x W^T.
// Packed weights (pack_same_input_weights): the same values and parameters, one product and
// outputs that are views of it without gradients, the separate products' gradients with them,
// unpacked again by Module::to, refused where a weight is not plain.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "model/projection.h"
#include "model/same_input_projections.h"

namespace hydra::model {
namespace {

std::vector<std::shared_ptr<LinearProjection>> projections(const std::vector<int64_t>& outs, int64_t in, bool bias) {
  std::vector<std::shared_ptr<LinearProjection>> out;
  for (size_t i = 0; i < outs.size(); ++i) {
    ProjectionSpec spec{"p" + std::to_string(i), in, outs[i]};
    spec.bias = bias && i == 1;
    spec.bias_init = 0.3;
    out.push_back(std::make_shared<LinearProjection>(spec));
    out.back()->to(torch::kDouble);
  }
  return out;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

void expect_same_as_separate(const std::vector<int64_t>& outs, bool bias) {
  const int64_t in = 24;
  const auto ps = projections(outs, in, bias);
  std::vector<ProjectionImpl*> raw;
  std::vector<torch::Tensor> weights;
  for (const auto& p : ps) {
    raw.push_back(p.get());
    weights.push_back(p->weight);
  }
  const std::string what = std::to_string(outs.size()) + " projections" + (bias ? ", one with a bias" : "");
  const torch::Tensor x0 = torch::randn({3, 5, in}, torch::kDouble);
  const torch::Tensor xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
  const std::vector<torch::Tensor> ya = project_same_input(xa, raw);
  std::vector<torch::Tensor> yb, up;
  for (const auto& p : ps) yb.push_back(p->forward(xb));
  ASSERT_EQ(ya.size(), yb.size()) << what;
  for (size_t i = 0; i < ya.size(); ++i) {
    EXPECT_TRUE(torch::equal(ya[i], yb[i])) << what << ": output " << i;
    up.push_back(torch::randn(yb[i].sizes(), torch::kDouble));
  }
  std::vector<torch::Tensor> inputs_a{xa}, inputs_b{xb};
  inputs_a.insert(inputs_a.end(), weights.begin(), weights.end());
  inputs_b.insert(inputs_b.end(), weights.begin(), weights.end());
  const auto ga = torch::autograd::grad(ya, inputs_a, up), gb = torch::autograd::grad(yb, inputs_b, up);
  for (size_t k = 0; k < ga.size(); ++k) EXPECT_LT(max_diff(ga[k], gb[k]), 1e-12) << what << ": gradient " << k;
  if (!bias && outs.size() <= 3) {
    // One node; its inputs are x and the weights: x's gradient is summed inside it.
    ASSERT_TRUE(ya[0].grad_fn());
    EXPECT_NE(ya[0].grad_fn()->name().find("SameInputLinear"), std::string::npos) << what;
    for (const auto& y : ya) EXPECT_EQ(y.grad_fn().get(), ya[0].grad_fn().get()) << what;
    EXPECT_EQ(ya[0].grad_fn()->next_edges().size(), 1 + outs.size()) << what;
  } else {
    EXPECT_EQ(ya[0].grad_fn()->name().find("SameInputLinear"), std::string::npos) << what << ": should fall back";
  }
}

TEST(SameInputProjections, EqualTheSeparateProjections) {
  torch::manual_seed(11);
  expect_same_as_separate({16, 4}, false);          // gate and up
  expect_same_as_separate({16, 4, 4}, false);       // q, k, v
  expect_same_as_separate({16, 4, 4}, true);        // a bias: separate forwards
  expect_same_as_separate({8, 8, 8, 8}, false);     // more than three: separate forwards
}

TEST(SameInputProjections, UnusedOutputsAndFrozenWeights) {
  torch::manual_seed(12);
  const auto ps = projections({6, 7}, 10, false);
  ps[1]->weight.requires_grad_(false);
  const torch::Tensor x = torch::randn({4, 10}, torch::kDouble).requires_grad_(true);
  const auto y = project_same_input(x, {ps[0].get(), ps[1].get()});
  // Only the first output reaches the loss: dx = dy W_0, dW_0 = dy^T x, no gradient for W_1.
  const torch::Tensor dy = torch::randn({4, 6}, torch::kDouble);
  const auto g = torch::autograd::grad({y[0]}, {x, ps[0]->weight}, {dy});
  EXPECT_LT(max_diff(g[0], dy.mm(ps[0]->weight)), 1e-12);
  EXPECT_LT(max_diff(g[1], dy.t().mm(x)), 1e-12);
  EXPECT_FALSE(y[1].requires_grad() && ps[1]->weight.grad().defined());
}

std::vector<ProjectionImpl*> raw_of(const std::vector<std::shared_ptr<LinearProjection>>& ps) {
  std::vector<ProjectionImpl*> raw;
  for (const auto& p : ps) raw.push_back(p.get());
  return raw;
}

TEST(SameInputProjections, PackedWeightsKeepTheirValuesAndDecodeAsOneProduct) {
  torch::manual_seed(13);
  const auto ps = projections({16, 4, 4}, 24, false);
  const auto twins = projections({16, 4, 4}, 24, false);  // the same weights, left unpacked
  std::vector<torch::Tensor> before;
  for (size_t i = 0; i < ps.size(); ++i) {
    torch::NoGradGuard no_grad;
    twins[i]->weight.copy_(ps[i]->weight);
    before.push_back(ps[i]->weight.clone());
  }
  ASSERT_TRUE(pack_same_input_weights(raw_of(ps)));
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(torch::equal(ps[i]->weight, before[i])) << "weight " << i;
    EXPECT_TRUE(ps[i]->weight.requires_grad()) << "weight " << i;
    // The registered parameter is the same tensor the projection holds (set_data, not a new one).
    EXPECT_TRUE(ps[i]->named_parameters()["weight"].is_same(ps[i]->weight)) << "weight " << i;
    EXPECT_TRUE(ps[i]->weight.is_alias_of(ps[0]->weight)) << "weight " << i << " shares one storage";
  }
  const torch::Tensor x = torch::randn({3, 5, 24}, torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    const auto y = project_same_input(x, raw_of(ps));
    const auto want = project_same_input(x, raw_of(twins));
    ASSERT_EQ(y.size(), want.size());
    for (size_t i = 0; i < y.size(); ++i) {
      EXPECT_LT(max_diff(y[i], want[i]), 1e-12) << "output " << i;
      EXPECT_TRUE(y[i].is_alias_of(y[0])) << "output " << i << ": a view of the one product";
      EXPECT_FALSE(want[i].is_alias_of(want[0]) && i > 0) << "unpacked: separate products";
    }
  }
  // With gradients: the autograd node of separate products, each weight its own gradient.
  const auto y = project_same_input(x, raw_of(ps));
  const auto want = project_same_input(x, raw_of(twins));
  std::vector<torch::Tensor> up, w, w_twin;
  for (size_t i = 0; i < y.size(); ++i) {
    EXPECT_TRUE(torch::equal(y[i], want[i])) << "output " << i;
    up.push_back(torch::randn(y[i].sizes(), torch::kDouble));
    w.push_back(ps[i]->weight);
    w_twin.push_back(twins[i]->weight);
  }
  const auto g = torch::autograd::grad(y, w, up), g_twin = torch::autograd::grad(want, w_twin, up);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_LT(max_diff(g[i], g_twin[i]), 1e-12) << "gradient " << i;
}

TEST(SameInputProjections, ToUnpacksAndABiasIsRefused) {
  torch::manual_seed(14);
  const auto ps = projections({6, 7}, 10, false);
  ASSERT_TRUE(pack_same_input_weights(raw_of(ps)));
  // Module::to gives each weight storage of its own: the products are separate again, and right.
  for (const auto& p : ps) p->to(torch::kFloat);
  const torch::Tensor x = torch::randn({4, 10});
  {
    torch::NoGradGuard no_grad;
    const auto y = project_same_input(x, raw_of(ps));
    EXPECT_FALSE(y[1].is_alias_of(y[0]));
    for (size_t i = 0; i < y.size(); ++i) EXPECT_LT(max_diff(y[i], x.mm(ps[i]->weight.t())), 1e-6) << i;
  }
  // A projection with a bias is not a plain x W^T: nothing is packed, nothing moves.
  const auto biased = projections({6, 7}, 10, true);
  const void* data = biased[0]->weight.data_ptr();
  EXPECT_FALSE(pack_same_input_weights(raw_of(biased)));
  EXPECT_EQ(biased[0]->weight.data_ptr(), data);
}

}  // namespace
}  // namespace hydra::model
