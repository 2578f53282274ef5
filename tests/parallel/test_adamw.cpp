// The flat layout and AdamW against a float64 AdamW written independently here, element by
// element, for 3 steps over parameters with and without weight decay (routers excluded).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "parallel/adamw.h"

namespace {

using namespace hydra::parallel;

NamedParams sample_params() {
  at::manual_seed(7);
  return {{"blocks.0.layers.0.attn.wq", at::randn({4, 3})},     // matrix: decays
          {"blocks.0.layers.0.attn_norm.weight", at::randn({5})},  // norm: no decay
          {"blocks.0.layers.1.mod_router.weight", at::randn({1, 3})},  // router: no decay
          {"embed.weight", at::randn({6, 2})}};                  // embedding: decays
}

TEST(FlatLayout, DecayRulesAndOffsets) {
  const NamedParams params = sample_params();
  const FlatLayout layout = make_flat_layout(params);
  ASSERT_EQ(layout.slots.size(), 4u);
  EXPECT_EQ(layout.numel, 12 + 5 + 3 + 12);
  EXPECT_TRUE(layout.slots[0].decay);
  EXPECT_FALSE(layout.slots[1].decay);
  EXPECT_FALSE(layout.slots[2].decay);
  EXPECT_TRUE(layout.slots[3].decay);
  EXPECT_EQ(layout.slots[2].offset, 17);
}

TEST(FlatLayout, GatherScatterRoundTripOnRangesThatCutParameters) {
  NamedParams params = sample_params();
  const FlatLayout layout = make_flat_layout(params);
  auto concat = [&] {
    std::vector<at::Tensor> flat;
    for (const auto& [name, p] : params) flat.push_back(p.reshape(-1).clone());
    return at::cat(flat);
  };
  for (int parts : {1, 3, 5}) {
    const at::Tensor before = concat();
    for (int i = 0; i < parts; ++i) {
      const Range r = shard_range(layout.numel, parts, i);
      at::Tensor flat = at::empty({r.size()});
      gather_flat(layout, params, r, Source::kValue, flat);
      EXPECT_TRUE(at::equal(flat, before.narrow(0, r.begin, r.size()))) << parts << " parts, part " << i;
      scatter_flat(layout, params, r, flat * 2);
    }
    // Every element was written exactly once by the parts together.
    EXPECT_TRUE(at::equal(concat(), before * 2)) << parts << " parts";
  }
}

TEST(AdamW, MatchesFloat64ReferenceForThreeSteps) {
  NamedParams params = sample_params();
  const FlatLayout layout = make_flat_layout(params);
  const AdamWHyper h{1e-2, 0.9, 0.95, 1e-8, 0.1};
  const Range whole{0, layout.numel};
  AdamWState state = make_adamw_state(layout, params, whole);

  // Reference state in double, one element at a time.
  std::vector<double> p(layout.numel), m(layout.numel, 0.0), v(layout.numel, 0.0), decay(layout.numel);
  for (const auto& slot : layout.slots) {
    const at::Tensor src = params[&slot - layout.slots.data()].second.reshape(-1).to(at::kDouble);
    for (int64_t j = 0; j < slot.numel; ++j) {
      p[slot.offset + j] = src[j].item<double>();
      decay[slot.offset + j] = slot.decay ? 1.0 : 0.0;
    }
  }
  at::manual_seed(11);
  for (int t = 1; t <= 3; ++t) {
    const at::Tensor g = at::randn({layout.numel});
    adamw_step(state, g, h);
    for (int64_t i = 0; i < layout.numel; ++i) {
      const double gi = g[i].item<float>();
      p[i] = p[i] - h.lr * h.weight_decay * decay[i] * p[i];
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(h.beta1, t));
      const double vhat = v[i] / (1 - std::pow(h.beta2, t));
      p[i] -= h.lr * mhat / (std::sqrt(vhat) + h.eps);
    }
  }
  for (int64_t i = 0; i < layout.numel; ++i) {
    EXPECT_NEAR(state.master[i].item<float>(), p[i], 1e-6 * (1 + std::abs(p[i]))) << "element " << i;
  }
  EXPECT_EQ(state.step, 3);
}

}  // namespace
