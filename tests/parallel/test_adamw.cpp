// The flat layout and AdamW against a float64 AdamW written independently here, element by
// element, for 3 steps over parameters with and without weight decay (routers excluded); the
// step gate (parallel/step_gate.h) and the gated update against the host path it replaced
// (clip factor and skip decided on the host, the step count on the host), in float64; a
// skipped step leaves the state bitwise as it was.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <limits>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/step_gate.h"

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
  AdamWHyper h{at::scalar_tensor(1e-2, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
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
    // A new learning rate each step, through the same tensor: the update reads it when it is
    // queued (a captured step replays with the schedule's value).
    const double lr = 1e-2 * t;
    h.lr.fill_(lr);
    const at::Tensor g = at::randn({layout.numel});
    adamw_step(state, g, h);
    for (int64_t i = 0; i < layout.numel; ++i) {
      const double gi = g[i].item<float>();
      p[i] = p[i] - lr * h.weight_decay * decay[i] * p[i];
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
      const double mhat = m[i] / (1 - std::pow(h.beta1, t));
      const double vhat = v[i] / (1 - std::pow(h.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + h.eps);
    }
  }
  for (int64_t i = 0; i < layout.numel; ++i) {
    EXPECT_NEAR(state.master[i].item<float>(), p[i], 1e-6 * (1 + std::abs(p[i]))) << "element " << i;
  }
  EXPECT_EQ(adamw_steps(state), 3);
}


TEST(StepGate, ClipsAboveTheThresholdAndSkipsNonFiniteLossOrNorm) {
  const auto d = [](double x) { return at::full({}, x, at::kDouble); };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto factor = [&](double norm, double clip) { return make_step_gate(d(1.0), d(norm), clip).clip_factor.item<double>(); };
  EXPECT_EQ(factor(3.0, 1.0), 1.0 / (3.0 + 1e-6));  // the host's arithmetic, to the bit
  EXPECT_EQ(factor(1.0, 1.0), 1.0);                 // at the threshold: left alone (the host's rule)
  EXPECT_EQ(factor(0.5, 1.0), 1.0);
  EXPECT_EQ(factor(3.0, 0.0), 1.0);                 // clip 0: off
  EXPECT_TRUE(make_step_gate(d(1.0), d(3.0), 1.0).finite.item<bool>());
  EXPECT_FALSE(make_step_gate(d(nan), d(3.0), 1.0).finite.item<bool>());
  EXPECT_FALSE(make_step_gate(d(1.0), d(inf), 1.0).finite.item<bool>());
  EXPECT_FALSE(make_step_gate(d(-inf), d(1.0), 0.0).finite.item<bool>());
}

// The host path the gated update replaced, element by element in float64: the host read the
// loss and the norm, skipped a non-finite step (nothing changes, the count stays), clipped by
// scaling the gradient with clip / (norm + 1e-6) when norm > clip, then stepped AdamW with its
// host step count.
struct HostPathAdamW {
  std::vector<double> p, m, v, decay;
  int64_t t = 0;
  void step(std::vector<double> g, double loss, double clip, const AdamWHyper& h) {
    double sumsq = 0;
    for (double x : g) sumsq += x * x;
    const double norm = std::sqrt(sumsq);
    if (!std::isfinite(loss) || !std::isfinite(norm)) return;
    if (clip > 0 && norm > clip) {
      for (double& x : g) x *= clip / (norm + 1e-6);
    }
    t += 1;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= h.lr.item<double>() * h.weight_decay * decay[i] * p[i];
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(h.beta1, static_cast<double>(t)));
      const double vhat = v[i] / (1 - std::pow(h.beta2, static_cast<double>(t)));
      p[i] -= h.lr.item<double>() * mhat / (std::sqrt(vhat) + h.eps);
    }
  }
};

NamedParams as_double(const NamedParams& params) {
  NamedParams out;
  for (const auto& [name, p] : params) out.emplace_back(name, p.to(at::kDouble));
  return out;
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void expect_close(const at::Tensor& got, const std::vector<double>& want, double rel, const std::string& what) {
  const std::vector<double> g = to_vector(got);
  ASSERT_EQ(g.size(), want.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_LE(std::abs(g[i] - want[i]), rel * std::abs(want[i]) + 1e-300) << what << " element " << i;
  }
}

// Steps 2 (NaN in the gradient) and 4 (an infinite loss) are skipped; with clip 0.5 some steps
// clip and some do not (the gradients' norms are drawn around it); with clip 0 none does; a
// run whose first step is skipped has no applied step to count from.
TEST(AdamW, GatedStepsEqualTheHostPathInFloat64) {
  const NamedParams params = as_double(sample_params());
  const FlatLayout layout = make_flat_layout(params);
  const AdamWHyper h{at::scalar_tensor(1e-2, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (double clip : {0.5, 0.0}) {
    for (int first_bad : {2, 0}) {
      AdamWState state = make_adamw_state(layout, params, {0, layout.numel});
      ASSERT_EQ(state.master.scalar_type(), at::kDouble);
      HostPathAdamW ref;
      ref.p = to_vector(state.master);
      ref.m.assign(layout.numel, 0.0);
      ref.v.assign(layout.numel, 0.0);
      ref.decay = to_vector(state.decay_mask);
      at::manual_seed(5);
      int clipped = 0;
      for (int step = 0; step < 7; ++step) {
        // Norms from about 0.2 to 0.9: around the threshold 0.5.
        at::Tensor g = at::randn({layout.numel}, at::kDouble) * (0.03 + 0.025 * step);
        double loss = 2.0;
        if (step == first_bad) g[3] = nan;
        if (step == 4) loss = inf;
        const double norm = std::sqrt((g * g).sum().item<double>());
        clipped += std::isfinite(norm) && std::isfinite(loss) && clip > 0 && norm > clip;
        ref.step(to_vector(g), loss, clip, h);
        const StepGate gate = make_step_gate(at::full({}, loss, at::kDouble), g.pow(2).sum().sqrt(), clip);
        adamw_step(state, g, h, gate);
        const std::string what = "clip " + std::to_string(clip) + " step " + std::to_string(step);
        expect_close(state.master, ref.p, 1e-12, what + " master");
        expect_close(state.exp_avg, ref.m, 1e-12, what + " m");
        expect_close(state.exp_avg_sq, ref.v, 1e-12, what + " v");
        EXPECT_EQ(adamw_steps(state), ref.t) << what;
      }
      EXPECT_EQ(ref.t, 5);  // 7 steps, 2 skipped
      if (clip > 0) {
        EXPECT_GT(clipped, 0);
        EXPECT_LT(clipped, 5);  // both sides of the threshold were exercised
      }
    }
  }
}

// Bit patterns, so that -0.0 against 0.0 or a changed NaN payload would count.
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.numel() == b.numel() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

TEST(AdamW, ASkippedStepLeavesTheStateBitwiseUnchanged) {
  const NamedParams params = sample_params();  // fp32, as in training
  const FlatLayout layout = make_flat_layout(params);
  const AdamWHyper h{at::scalar_tensor(1e-2, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (int applied_before : {0, 2}) {
    AdamWState state = make_adamw_state(layout, params, {0, layout.numel});
    at::manual_seed(3);
    for (int i = 0; i < applied_before; ++i) adamw_step(state, at::randn({layout.numel}), h);
    // A gradient of NaN and inf (as a poisoned backward leaves it), or a finite gradient with
    // a non-finite loss.
    at::Tensor bad = at::randn({layout.numel});
    bad[0] = nan;
    bad[1] = inf;
    bad[2] = -inf;
    const std::vector<std::pair<at::Tensor, double>> cases = {{bad, 1.0}, {at::randn({layout.numel}), nan}};
    for (const auto& [g, loss] : cases) {
      const at::Tensor master = state.master.clone(), m = state.exp_avg.clone(), v = state.exp_avg_sq.clone();
      const at::Tensor step = state.step.clone();
      const StepGate gate = make_step_gate(at::full({}, loss, at::kDouble), g.to(at::kDouble).pow(2).sum().sqrt(), 0.5);
      ASSERT_FALSE(gate.finite.item<bool>());
      adamw_step(state, g, h, gate);
      EXPECT_TRUE(same_bits(state.master, master)) << applied_before << " steps before";
      EXPECT_TRUE(same_bits(state.exp_avg, m)) << applied_before << " steps before";
      EXPECT_TRUE(same_bits(state.exp_avg_sq, v)) << applied_before << " steps before";
      EXPECT_TRUE(same_bits(state.step, step)) << applied_before << " steps before";
      EXPECT_EQ(adamw_steps(state), applied_before);
    }
  }
}

}  // namespace
