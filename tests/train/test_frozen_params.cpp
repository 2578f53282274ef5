// train.freeze's pattern rule and its refusals (train/frozen_params.h), without a run:
// `*` spans dots, a pattern must match a whole name, and the errors name the key and pattern.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "train/frozen_params.h"

namespace {

using hydra::train::check_freeze;
using hydra::train::count_frozen;
using hydra::train::FreezeCounts;
using hydra::train::glob_matches;
using hydra::train::ParamCount;

TEST(FrozenParams, GlobMatchesWholeNamesAndStarSpansDots) {
  EXPECT_TRUE(glob_matches("embed.weight", "embed.weight"));
  EXPECT_TRUE(glob_matches("embed.*", "embed.weight"));
  EXPECT_TRUE(glob_matches("blocks.*.attn.*", "blocks.0.layers.3.attn.wq.weight"));
  EXPECT_TRUE(glob_matches("*.mlp_norm.weight", "blocks.1.layers.0.mlp_norm.weight"));
  EXPECT_TRUE(glob_matches("*", "final_norm.weight"));
  EXPECT_TRUE(glob_matches("blocks.0.*", "blocks.0.mor_routers.0.bias"));
  EXPECT_TRUE(glob_matches("*a*b*c", "xaxxbxxc"));
  EXPECT_TRUE(glob_matches("**", ""));
  EXPECT_FALSE(glob_matches("embed", "embed.weight"));     // whole names only
  EXPECT_FALSE(glob_matches("mbed.weight", "embed.weight"));
  EXPECT_FALSE(glob_matches("blocks.1.*", "blocks.10.layers.0.attn.wq.weight"));
  EXPECT_FALSE(glob_matches("blocks.0.*", "blocks.1.layers.0.attn.wq.weight"));
  EXPECT_FALSE(glob_matches("*a*b*c", "xaxxbxxcx"));
  EXPECT_FALSE(glob_matches("", "embed.weight"));
  EXPECT_FALSE(glob_matches("embed.?eight", "embed.weight"));  // only * is special
}

TEST(FrozenParams, CountsTensorsAndElementsSkippingUncountedCopies) {
  const std::vector<ParamCount> params = {{"embed.weight", 1000, true},
                                          {"blocks.0.layers.0.attn.wq.weight", 64, true},
                                          {"blocks.0.layers.1.attn.wq.weight", 64, true},
                                          {"final_norm.weight", 8, true},
                                          {"embed.weight", 1000, false}};  // a tied copy
  const FreezeCounts c = count_frozen({"embed.*", "blocks.*.layers.0.*", "nothing.*"}, params);
  EXPECT_EQ(c.matches, (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ(c.frozen_tensors, 2);
  EXPECT_EQ(c.frozen_elements, 1064);
  EXPECT_EQ(c.trainable_tensors, 2);
  EXPECT_EQ(c.trainable_elements, 72);
}

std::string refusal(const std::vector<std::string>& patterns, const FreezeCounts& counts, int empty_stage = -1) {
  try {
    check_freeze("run.yaml", patterns, counts, empty_stage);
  } catch (const hydra::common::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(FrozenParams, RefusesAPatternThatMatchesNothingNamingKeyAndPattern) {
  FreezeCounts c;
  c.matches = {3, 0};
  c.frozen_tensors = 3;
  c.trainable_tensors = 5;
  const std::string message = refusal({"embed.*", "blocks.*.atn.*"}, c);
  EXPECT_NE(message.find("run.yaml: train.freeze: pattern 'blocks.*.atn.*' matches no parameter"), std::string::npos)
      << message;
}

TEST(FrozenParams, RefusesFreezingEverythingAndAnEmptyPipelineStage) {
  FreezeCounts all;
  all.matches = {9};
  all.frozen_tensors = 9;
  EXPECT_NE(refusal({"*"}, all).find("train.freeze: the patterns freeze all 9 parameters"), std::string::npos);
  FreezeCounts some;
  some.matches = {4};
  some.frozen_tensors = 4;
  some.trainable_tensors = 5;
  EXPECT_EQ(refusal({"blocks.0.*"}, some), "");
  EXPECT_NE(refusal({"blocks.0.*"}, some, 0).find("train.freeze freezes every parameter of pipeline stage 0"),
            std::string::npos);
  EXPECT_EQ(refusal({}, FreezeCounts{}), "");  // no patterns: everything trains
}

}  // namespace
