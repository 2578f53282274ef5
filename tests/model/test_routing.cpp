// Mixture-of-Depths and Mixture-of-Recursions: gating, capacities, aux-loss gradients, causal
// threshold mode; activation checkpointing against the plain graph.
#include <functional>

#include "model/hydra_model.h"
#include "model/recompute.h"
#include "model_test_util.h"

namespace hydra::model {
namespace {

using test::small_config;

ModelConfig routed_config() {
  ModelConfig c = small_config();
  c.mod.enabled = true;
  c.mor.recursions = 2;
  return c;
}

HydraModel build(const ModelConfig& c, const std::string& checkpointing = "none", uint64_t seed = 1) {
  torch::manual_seed(seed);
  ModelOptions options;
  options.activation_checkpointing = checkpointing;
  auto model = std::make_shared<HydraModelImpl>(c, options);
  model->to(torch::kDouble);
  return model;
}

torch::Tensor positions_for(int64_t B, int64_t S) {
  return torch::arange(S, torch::kLong).unsqueeze(0).expand({B, S}).contiguous();
}

// "Capacity 1 equals dense" with the gate: every token is routed, so the MoD layer must give
// x + sigmoid(r) (Layer(x) - x) with Layer the dense layer; the gate is part of MoD's
// definition, so this is the dense computation with the same gating.
TEST(ModelMod, CapacityOneIsTheDenseLayerWithItsGate) {
  ModelConfig c = small_config();
  c.mod.enabled = true;
  c.mod.capacity = 1.0;
  HydraModel model = build(c);
  const Layer& layer = model->blocks[0]->layers[1];
  ASSERT_TRUE(layer->router);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 7, c.dim}, torch::kDouble);
  const auto pos = positions_for(2, 7);
  RoutingLog log;
  const torch::Tensor y = layer->forward(x, pos, {RouteMode::kTopK, &log})[0];
  const torch::Tensor gate = torch::sigmoid(layer->router->forward(x));
  const torch::Tensor expected = x + gate * (layer->dense(x, pos) - x);
  EXPECT_TRUE(torch::allclose(y, expected, 1e-12, 1e-12));
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].selected, 2 * 7);
}

TEST(ModelMod, ProcessesTheConfiguredCapacity) {
  ModelConfig c = small_config();
  c.mod.enabled = true;
  c.mod.capacity = 0.75;
  HydraModel model = build(c);
  torch::NoGradGuard no_grad;
  const auto tokens = torch::randint(c.vocab_size, {3, 16}, torch::kLong);
  const ModelOutput out = model->forward(tokens);
  ASSERT_EQ(out.routing.size(), c.mod.layers.size());
  for (const auto& r : out.routing) {
    EXPECT_EQ(r.selected, 3 * 12) << r.name;  // floor(0.75 * 16) per sequence
    EXPECT_EQ(r.candidates, 3 * 16);
  }
  EXPECT_EQ(out.routing[0].name, "blocks.0.layers.1.router");
}

// Recursion 2 of R = 2 takes ceil(S/2) tokens: those must equal the block applied to that
// subsequence (original positions) with the gate; the rest keep the recursion-1 output.
TEST(ModelMor, SecondRecursionRunsTheBlockOnTheRoutedTokens) {
  ModelConfig c = small_config();
  c.mor.recursions = 2;
  HydraModel model = build(c);
  const MacroBlock& block = model->blocks[0];
  ASSERT_EQ(block->mor_routers.size(), 1u);
  torch::NoGradGuard no_grad;
  const int64_t B = 2, S = 9, k = 5;
  const torch::Tensor x = torch::randn({B, S, c.dim}, torch::kDouble);
  const auto pos = positions_for(B, S);
  RoutingLog log;
  const torch::Tensor y = block->forward(x, pos, {RouteMode::kTopK, &log})[0];
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].selected, B * k);

  const torch::Tensor h1 = block->run_layers(x, pos, {})[0];
  const torch::Tensor r = block->mor_routers[0]->forward(h1).squeeze(-1);
  for (int64_t b = 0; b < B; ++b) {
    const torch::Tensor idx = std::get<0>(torch::sort(std::get<1>(torch::topk(r[b], k))));
    const torch::Tensor sub = h1[b].index_select(0, idx).unsqueeze(0);
    const torch::Tensor f = block->run_layers(sub, idx.unsqueeze(0), {})[0];
    const torch::Tensor g = torch::sigmoid(r[b].index_select(0, idx)).unsqueeze(-1);
    torch::Tensor expected = h1[b].clone();
    expected.index_copy_(0, idx, (sub + g * (f - sub))[0]);
    EXPECT_TRUE(torch::allclose(y[b], expected, 1e-12, 1e-12)) << "sequence " << b;
  }
}

TEST(ModelMor, OneRecursionIsTheDenseBlock) {
  const ModelConfig c = small_config();  // R = 1
  HydraModel model = build(c);
  EXPECT_TRUE(model->blocks[0]->mor_routers.empty());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 6, c.dim}, torch::kDouble);
  const auto pos = positions_for(2, 6);
  RoutingLog log;
  EXPECT_TRUE(test::bit_identical(model->blocks[0]->forward(x, pos, {RouteMode::kTopK, &log})[0],
                                  model->blocks[0]->run_layers(x, pos, {})[0]));
  EXPECT_TRUE(log.empty());
}

TEST(ModelRouting, AuxLossGradientsReachEveryRouter) {
  HydraModel model = build(routed_config());
  const auto tokens = torch::randint(97, {2, 12}, torch::kLong);
  const ModelOutput out = model->forward(tokens, torch::randint(97, {2, 12}, torch::kLong));
  ASSERT_GT(out.aux_loss.item<double>(), 0.0);
  out.aux_loss.backward();
  int routers = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.key().find("router") == std::string::npos) continue;
    ++routers;
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  EXPECT_EQ(routers, 2 * (4 + 1));  // weight and bias of 4 MoD routers and 1 MoR router
}

// Threshold mode is causal: tokens after t cannot change any output at <= t.
TEST(ModelRouting, ThresholdModeIsCausal) {
  HydraModel model = build(routed_config());
  {
    // Routers start biased to their capacity; zero biases make the decisions mixed.
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("router") != std::string::npos && p.key().find("bias") != std::string::npos) p.value().zero_();
      if (p.key().find("router") != std::string::npos && p.key().find("weight") != std::string::npos) {
        p.value().normal_(0.0, 1.0);
      }
    }
  }
  torch::NoGradGuard no_grad;
  const int64_t B = 2, S = 16, t = 6;
  const torch::Tensor tokens = torch::randint(97, {B, S}, torch::kLong);
  torch::Tensor tokens2 = tokens.clone();
  tokens2.narrow(1, t + 1, S - t - 1).copy_(torch::randint(97, {B, S - t - 1}, torch::kLong));
  ForwardOptions causal;
  causal.causal_routing = true;
  const ModelOutput a = model->forward(tokens, {}, causal), b = model->forward(tokens2, {}, causal);
  EXPECT_TRUE(test::bit_identical(a.logits.narrow(1, 0, t + 1), b.logits.narrow(1, 0, t + 1)));
  EXPECT_FALSE(torch::allclose(a.logits.narrow(1, t + 1, S - t - 1), b.logits.narrow(1, t + 1, S - t - 1)));
  // Both decisions occur, so the test exercises the routing.
  for (const auto& r : a.routing) {
    EXPECT_GT(r.selected, 0) << r.name;
    EXPECT_LT(r.selected, r.candidates) << r.name;
  }
  EXPECT_EQ(a.aux_loss.item<double>(), 0.0);
}

// The routing log of MoR with three recursions: each router's candidates are the tokens the
// previous one selected (counted on the host; a captured training step reads nothing back),
// in top-k mode and in the causal threshold mode alike.
TEST(ModelMor, EachRoutersCandidatesAreThePreviousSelection) {
  ModelConfig c = small_config();
  c.mor.recursions = 3;
  HydraModel model = build(c);
  torch::NoGradGuard no_grad;
  const int64_t B = 2, S = 12;
  const auto tokens = torch::randint(97, {B, S}, torch::kLong);
  for (bool causal : {false, true}) {
    ForwardOptions options;
    options.causal_routing = causal;
    const ModelOutput out = model->forward(tokens, {}, options);
    std::vector<RoutingStat> mor;
    for (const auto& r : out.routing) {
      if (r.name.find("mor_routers") != std::string::npos) mor.push_back(r);
    }
    ASSERT_EQ(mor.size(), 2u) << "causal " << causal;
    EXPECT_EQ(mor[0].candidates, B * S) << "causal " << causal;
    EXPECT_EQ(mor[1].candidates, mor[0].selected) << "causal " << causal;
    if (!causal) EXPECT_LT(mor[1].selected, mor[0].selected);  // capacities shrink with depth
  }
}

class Checkpointing : public ::testing::TestWithParam<std::string> {};

// One batch through both models, backward: the same loss, the same routing statistics, and the
// same gradient for every parameter (none for those `frozen` names).
void expect_same_loss_and_gradients(HydraModel& plain, HydraModel& ckpt,
                                    const std::function<bool(const std::string&)>& frozen) {
  const auto tokens = torch::randint(97, {2, 10}, torch::kLong);
  const auto targets = torch::randint(97, {2, 10}, torch::kLong);
  const ModelOutput a = plain->forward(tokens, targets), b = ckpt->forward(tokens, targets);
  a.loss().backward();
  b.loss().backward();
  EXPECT_NEAR(a.loss().item<double>(), b.loss().item<double>(), 1e-12);
  EXPECT_EQ(a.routing.size(), b.routing.size());  // no duplicate stats from the recompute
  auto pb = ckpt->named_parameters();
  for (const auto& p : plain->named_parameters()) {
    const torch::Tensor& g = p.value().grad();
    const torch::Tensor& h = pb[p.key()].grad();
    if (frozen(p.key())) {
      EXPECT_FALSE(h.defined()) << p.key();
      continue;
    }
    ASSERT_TRUE(g.defined() && h.defined()) << p.key();
    EXPECT_TRUE(torch::allclose(g, h, 1e-10, 1e-12)) << p.key();
  }
}

TEST_P(Checkpointing, SameLossAndGradientsAsWithout) {
  const ModelConfig c = routed_config();
  HydraModel plain = build(c, "none", 3), ckpt = build(c, GetParam(), 3);
  expect_same_loss_and_gradients(plain, ckpt, [](const std::string&) { return false; });
}

// train.freeze with recompute: a frozen prefix (the embedding and the first macro-block) is not
// recomputed and records nothing, and the parameters that train get the plain graph's gradients.
TEST_P(Checkpointing, FrozenPrefixIsNotRecomputedAndTheRestMatches) {
  ModelConfig c = routed_config();
  c.macro_blocks = 2;
  HydraModel plain = build(c, "none", 3), ckpt = build(c, GetParam(), 3);
  const auto frozen = [](const std::string& name) { return name.rfind("embed.", 0) == 0 || name.rfind("blocks.0.", 0) == 0; };
  for (HydraModel* m : {&plain, &ckpt}) {
    for (auto& p : (*m)->named_parameters()) {
      if (frozen(p.key())) p.value().set_requires_grad(false);
    }
  }
  expect_same_loss_and_gradients(plain, ckpt, frozen);
}

INSTANTIATE_TEST_SUITE_P(Model, Checkpointing, ::testing::Values("mlp", "layer", "block"));

// The primitive: a segment with nothing to train on an input that needs no gradient runs once
// and records nothing; with a parameter that trains it is recorded and recomputed in backward.
TEST(Recompute, ASegmentWithNothingToTrainRunsOnceAndRecordsNothing) {
  // Two one-weight segments: one frozen (as train.freeze leaves it), one that trains.
  struct Scale : torch::nn::Module {
    explicit Scale(bool trains) : w(register_parameter("w", torch::ones({3}, torch::kDouble), trains)) {}
    torch::Tensor w;
  };
  Scale frozen(false), trained(true);
  const torch::Tensor x = torch::randn({2, 3}, torch::kDouble);  // needs no gradient
  int calls = 0;
  const auto times = [&](const torch::Tensor& weight) {
    return RecomputeFn([&calls, weight](const torch::Tensor& in, bool) {
      ++calls;
      return std::vector<torch::Tensor>{in * weight};
    });
  };
  const torch::Tensor skipped = checkpointed(x, times(frozen.w), frozen)[0];
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(skipped.requires_grad());
  const torch::Tensor kept = checkpointed(x, times(trained.w), trained)[0];
  EXPECT_EQ(calls, 2);
  ASSERT_TRUE(kept.requires_grad());
  kept.sum().backward();
  EXPECT_EQ(calls, 3);  // the recompute
  EXPECT_TRUE(torch::allclose(trained.w.grad(), x.sum(0)));
}

}  // namespace
}  // namespace hydra::model
