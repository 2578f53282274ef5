// Pipeline stages of the model (ModelOptions::stage) against the whole model, in one process
// and float64: each stage, built from the same seed, holds exactly the whole model's
// parameters of its layers (same names, same values), and passing a batch through the stages
// in order gives the whole model's loss and, after backward through the chain, its gradients.
// The stage plan (parallel/pipeline_plan.h) is tested with the parallel tests.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <map>
#include <string>
#include <vector>

#include "model/hydra_model.h"
#include "tests/model/model_test_util.h"

namespace hydra::model {
namespace {

constexpr int64_t kBatch = 2, kSeq = 12;

std::map<std::string, torch::Tensor> by_name(const HydraModelImpl& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value();
  return out;
}

HydraModel build(const ModelConfig& c, StageLayers stage = {}) {
  torch::manual_seed(7);
  ModelOptions options;
  options.stage = stage;
  auto m = std::make_shared<HydraModelImpl>(c, options);
  m->to(torch::kDouble);
  return m;
}

// Runs the stages in order (the hidden state of one is the next one's input, detached and
// made a leaf as a pipeline receive does), then backward from the last to the first.
void expect_stages_equal_whole(const ModelConfig& c, const std::vector<StageLayers>& plan) {
  const HydraModel whole = build(c);
  const torch::Tensor tokens = torch::randint(0, c.vocab_size, {kBatch, kSeq}, torch::kLong);
  const torch::Tensor targets = torch::randint(0, c.vocab_size, {kBatch, kSeq}, torch::kLong);
  const ModelOutput want = whole->forward(tokens, targets);
  want.loss().backward();
  const auto whole_params = by_name(*whole);

  std::vector<HydraModel> stages;
  std::vector<ModelOutput> outs;
  std::vector<torch::Tensor> inputs;
  torch::Tensor aux_total = torch::zeros({}, torch::kDouble);
  for (const StageLayers& s : plan) {
    stages.push_back(build(c, s));
    torch::Tensor input = tokens;
    if (!outs.empty()) input = outs.back().hidden.detach().requires_grad_(true);
    inputs.push_back(input);
    outs.push_back(stages.back()->forward(input, targets));
    aux_total = aux_total + outs.back().aux_loss.detach();
  }
  EXPECT_NEAR(outs.back().lm_loss.item<double>(), want.lm_loss.item<double>(), 1e-12);
  EXPECT_NEAR(aux_total.item<double>(), want.aux_loss.item<double>(), 1e-12);
  // Backward: the last stage from its loss, each earlier one from the gradient of the next
  // stage's input (plus its own aux loss).
  torch::Tensor grad;
  for (int s = static_cast<int>(plan.size()) - 1; s >= 0; --s) {
    const ModelOutput& o = outs[s];
    if (s + 1 == static_cast<int>(plan.size())) {
      o.loss().backward();
    } else {
      std::vector<torch::Tensor> roots = {o.hidden}, grads = {grad};
      if (o.aux_loss.requires_grad()) roots.push_back(o.aux_loss), grads.push_back(torch::ones_like(o.aux_loss));
      torch::autograd::backward(roots, grads);
    }
    if (s > 0) grad = inputs[s].grad();
  }
  // Every parameter lives on exactly one stage (the tied embedding's copy on the last stage
  // besides), with the whole model's value; gradients match, the tied embedding's summed.
  std::map<std::string, int> holders;
  std::map<std::string, torch::Tensor> grad_sum;
  for (const HydraModel& stage : stages) {
    for (const auto& [name, p] : by_name(*stage)) {
      ASSERT_TRUE(whole_params.count(name)) << name;
      EXPECT_TRUE(torch::equal(p, whole_params.at(name))) << name << " differs from the whole model's";
      holders[name] += 1;
      grad_sum[name] = grad_sum.count(name) ? grad_sum[name] + p.grad() : p.grad().clone();
    }
  }
  for (const auto& [name, p] : whole_params) {
    const int expected = (name == "embed.weight" && c.tie_embeddings && plan.size() > 1) ? 2 : 1;
    EXPECT_EQ(holders[name], expected) << name;
    ASSERT_TRUE(grad_sum[name].defined()) << name;
    EXPECT_TRUE(torch::allclose(grad_sum[name], p.grad(), 1e-9, 1e-12)) << name << " gradient";
  }
}

ModelConfig routed_config(int blocks, int recursions, bool tied) {
  ModelConfig c = test::small_config();
  c.macro_blocks = blocks;
  c.mod.enabled = true;
  c.mod.capacity = 0.5;
  c.mor.recursions = recursions;
  c.tie_embeddings = tied;
  return c;
}

TEST(PipelineStages, TwoStagesOfWholeMacroBlocksWithMoR) {
  expect_stages_equal_whole(routed_config(2, 2, false), {{0, 8}, {8, 16}});
}

TEST(PipelineStages, TiedEmbeddingCopyOnTheLastStage) {
  expect_stages_equal_whole(routed_config(2, 2, true), {{0, 8}, {8, 16}});
}

TEST(PipelineStages, UnevenLayerStagesWithoutMoR) {
  // MoR off: stage boundaries inside a macro-block, stages of 3, 1 and 4 layers.
  expect_stages_equal_whole(routed_config(1, 1, true), {{0, 3}, {3, 4}, {4, 8}});
}

// The grouped-query kinds (MQA, GQA with 2 KV heads, MHA) through two stages of a macro-block.
TEST(PipelineStages, GroupedKindsThroughTwoStages) {
  ModelConfig c = routed_config(2, 1, true);
  c.pattern = {"gqa", "mha", "mqa", "gqa"};
  c.mod.layers = {1, 3};
  expect_stages_equal_whole(c, {{0, 3}, {3, 8}});
}

TEST(PipelineStages, StageInsideAMacroBlockIsRefusedWithMoR) {
  EXPECT_ANY_THROW(build(routed_config(1, 2, false), {0, 4}));
}

}  // namespace
}  // namespace hydra::model
