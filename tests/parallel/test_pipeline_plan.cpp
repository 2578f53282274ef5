// The pipeline stage planner: balanced splits against a brute-force search over every
// contiguous split, whole macro-blocks with MoR on, configured splits, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>

#include "common/errors.h"
#include "model/dims.h"
#include "model/model_info.h"
#include "parallel/pipeline_plan.h"

namespace hydra::parallel {
namespace {

model::ModelConfig config(int blocks, int recursions, bool tied) {
  model::ModelConfig c;
  c.dim = 64;
  c.heads = 4;
  c.kv_heads = 2;
  c.mlp_ratio = 2.0;
  c.macro_blocks = blocks;
  c.vocab_size = 1000;
  c.tie_embeddings = tied;
  c.mod.enabled = true;
  c.mor.recursions = recursions;
  c.ccqa.compress = "head_dim";  // the layout the expected counts were worked out for
  return c;
}

int64_t largest(const std::vector<int64_t>& v) { return *std::max_element(v.begin(), v.end()); }

// The smallest possible largest stage, by trying every split into `stages` runs of `unit` layers.
int64_t brute_force_best(const model::ModelConfig& c, int stages, int unit) {
  const int units = static_cast<int>(c.pattern.size()) * c.macro_blocks / unit;
  int64_t best = std::numeric_limits<int64_t>::max();
  std::vector<model::StageLayers> plan;
  std::function<void(int, int)> place = [&](int from, int left) {
    if (left == 1) {
      plan.push_back({from * unit, units * unit});
      best = std::min(best, largest(stage_params(c, plan)));
      plan.pop_back();
      return;
    }
    for (int end = from + 1; end <= units - left + 1; ++end) {
      plan.push_back({from * unit, end * unit});
      place(end, left - 1);
      plan.pop_back();
    }
  };
  place(0, stages);
  return best;
}

void expect_contiguous_cover(const model::ModelConfig& c, const std::vector<model::StageLayers>& plan, int stages) {
  ASSERT_EQ(static_cast<int>(plan.size()), stages);
  EXPECT_EQ(plan.front().first, 0);
  EXPECT_EQ(plan.back().end, static_cast<int>(c.pattern.size()) * c.macro_blocks);
  for (size_t s = 0; s < plan.size(); ++s) {
    EXPECT_LT(plan[s].first, plan[s].end) << "stage " << s << " is empty";
    if (s > 0) EXPECT_EQ(plan[s].first, plan[s - 1].end);
  }
}

TEST(PipelinePlan, BalancedSplitIsOptimalLayerByLayer) {
  for (int stages : {1, 2, 3, 4, 5}) {
    const model::ModelConfig c = config(2, 1, stages % 2 == 0);
    const auto plan = plan_pipeline_stages(c, stages);
    expect_contiguous_cover(c, plan, stages);
    EXPECT_EQ(largest(stage_params(c, plan)), brute_force_best(c, stages, 1)) << stages << " stages";
  }
}

TEST(PipelinePlan, WithMoRStagesHoldWholeMacroBlocks) {
  const model::ModelConfig c = config(4, 2, false);
  for (int stages : {2, 3, 4}) {
    const auto plan = plan_pipeline_stages(c, stages);
    expect_contiguous_cover(c, plan, stages);
    for (const auto& s : plan) EXPECT_EQ(s.first % 8, 0) << "boundary inside a macro-block";
    EXPECT_EQ(largest(stage_params(c, plan)), brute_force_best(c, stages, 8)) << stages << " stages";
  }
}

TEST(PipelinePlan, StageParamsAddUpToTheModel) {
  // Every parameter on exactly one stage, plus the tied embedding's copy on the last.
  for (bool tied : {false, true}) {
    const model::ModelConfig c = config(2, 2, tied);
    const auto plan = plan_pipeline_stages(c, 2);
    int64_t sum = 0;
    for (int64_t p : stage_params(c, plan)) sum += p;
    const int64_t copy = tied ? model::padded_vocab(c.vocab_size, 1) * c.dim : 0;
    EXPECT_EQ(sum, model::compute_model_stats(c, 16).params_total + copy) << "tied " << tied;
    // One stage: the whole model, the tied embedding once (it was counted twice, and hydra
    // info's memory estimate with it).
    EXPECT_EQ(stage_params(c, plan_pipeline_stages(c, 1)), std::vector<int64_t>{model::compute_model_stats(c, 16).params_total})
        << "tied " << tied;
  }
}

TEST(PipelinePlan, ConfiguredSplitIsTakenAsGiven) {
  const auto plan = plan_pipeline_stages(config(2, 1, false), 3, {2, 9, 5});
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[1].first, 2);
  EXPECT_EQ(plan[1].end, 11);
  EXPECT_EQ(plan[2].end, 16);
}

void expect_config_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << fragment;
  } catch (const common::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(PipelinePlan, ImpossibleSplitsNameTheKey) {
  expect_config_error([] { plan_pipeline_stages(config(1, 2, false), 2); }, "parallel.pp 2 exceeds the 1 macro-blocks");
  expect_config_error([] { plan_pipeline_stages(config(1, 1, false), 9); }, "parallel.pp 9 exceeds the 8 layers");
  expect_config_error([] { plan_pipeline_stages(config(2, 1, false), 2, {8}); }, "parallel.pp_layers has 1 entries");
  expect_config_error([] { plan_pipeline_stages(config(2, 1, false), 2, {8, 7}); }, "sums to 15 layers");
  expect_config_error([] { plan_pipeline_stages(config(2, 2, false), 2, {4, 12}); }, "not a multiple of the 8 layers");
  expect_config_error([] { plan_pipeline_stages(config(2, 1, false), 2, {0, 16}); }, "every stage needs a layer");
}

}  // namespace
}  // namespace hydra::parallel
