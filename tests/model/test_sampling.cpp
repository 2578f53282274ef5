// model/sampling.h against distributions worked out by hand: greedy, temperature, top-k,
// top-p, the tie order, and draws whose frequencies match the distribution.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "model/sampling.h"

namespace hydra::model {
namespace {

torch::Tensor row(std::vector<double> v) { return torch::tensor(v, torch::kDouble); }

TEST(Sampling, GreedyTakesTheFirstLargest) {
  std::mt19937_64 rng(1);
  SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample_next_token(row({0.5, 2.0, -1.0, 2.0}), greedy, rng), 1);
  EXPECT_TRUE(torch::equal(sampling_distribution(row({0.5, 2.0, -1.0, 2.0}), greedy), row({0, 1, 0, 0})));
}

TEST(Sampling, TemperatureScalesTheLogits) {
  // softmax([0, ln 3] / T): T = 1 gives (1/4, 3/4); T = 2 gives (1, sqrt 3) / (1 + sqrt 3).
  const torch::Tensor z = row({0.0, std::log(3.0)});
  SamplingOptions o;
  torch::Tensor p = sampling_distribution(z, o);
  EXPECT_NEAR(p[0].item<double>(), 0.25, 1e-15);
  EXPECT_NEAR(p[1].item<double>(), 0.75, 1e-15);
  o.temperature = 2;
  p = sampling_distribution(z, o);
  EXPECT_NEAR(p[1].item<double>(), std::sqrt(3.0) / (1 + std::sqrt(3.0)), 1e-15);
}

TEST(Sampling, TopKAndTopPKeepTheLargest) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (logits ln of them).
  const torch::Tensor z = row({std::log(0.125), std::log(0.5), std::log(0.125), std::log(0.25)});
  SamplingOptions o;
  o.top_k = 2;  // ids 1 and 3, renormalised: 2/3, 1/3
  torch::Tensor p = sampling_distribution(z, o);
  EXPECT_NEAR(p[1].item<double>(), 2.0 / 3, 1e-15);
  EXPECT_NEAR(p[3].item<double>(), 1.0 / 3, 1e-15);
  EXPECT_EQ(p[0].item<double>(), 0.0);
  o.top_k = 0;
  o.top_p = 0.8;  // 0.5 + 0.25 < 0.8: the next one too; ids 0 and 2 tie, the lower id ranks first
  p = sampling_distribution(z, o);
  EXPECT_NEAR(p[1].item<double>(), 0.5 / 0.875, 1e-15);
  EXPECT_NEAR(p[3].item<double>(), 0.25 / 0.875, 1e-15);
  EXPECT_NEAR(p[0].item<double>(), 0.125 / 0.875, 1e-15);
  EXPECT_EQ(p[2].item<double>(), 0.0);
  o.top_p = 0.5;  // the largest alone reaches 0.5
  p = sampling_distribution(z, o);
  EXPECT_EQ(p[1].item<double>(), 1.0);
}

TEST(Sampling, DrawsFollowTheDistributionAndTheSeed) {
  const torch::Tensor z = row({std::log(0.1), std::log(0.2), std::log(0.3), std::log(0.4)});
  SamplingOptions o;
  std::mt19937_64 rng(7);
  const int n = 40000;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < n; ++i) counts[sample_next_token(z, o, rng)] += 1;
  for (int id = 0; id < 4; ++id) {
    const double want = 0.1 * (id + 1), sd = std::sqrt(want * (1 - want) / n);
    EXPECT_NEAR(counts[id] / static_cast<double>(n), want, 5 * sd) << "id " << id;
  }
  std::mt19937_64 a(3), b(3);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_next_token(z, o, a), sample_next_token(z, o, b));
}

// The reference: every id ranked by one full stable sort, the filters and the draw over it.
std::vector<std::pair<int64_t, double>> reference_kept(const std::vector<double>& z, const SamplingOptions& o) {
  std::vector<int64_t> order(z.size());
  for (size_t i = 0; i < z.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  const size_t k = o.top_k > 0 ? std::min<size_t>(o.top_k, z.size()) : z.size();
  std::vector<std::pair<int64_t, double>> kept;
  double sum = 0;
  for (size_t i = 0; i < k; ++i) {
    kept.push_back({order[i], std::exp((z[order[i]] - z[order[0]]) / o.temperature)});
    sum += kept.back().second;
  }
  for (auto& item : kept) item.second /= sum;
  if (o.top_p < 1) {
    double cumulative = 0;
    size_t n = 0;
    while (n < kept.size() && cumulative < o.top_p) cumulative += kept[n++].second;
    kept.resize(n);
    for (auto& item : kept) item.second /= cumulative;
  }
  return kept;
}

// A GPT-2-sized row with ties: the distribution and a seed's draws equal the full sort's
// (sample_next_token ranks only as far as a draw reaches; unfiltered, it draws over the ids in
// id order).
TEST(Sampling, PartialRankingEqualsAFullSort) {
  torch::manual_seed(5);
  const torch::Tensor logits = (torch::randn({50257}, torch::kDouble) * 3).round() / 2;  // many ties
  std::vector<double> z(logits.data_ptr<double>(), logits.data_ptr<double>() + logits.numel());
  for (const auto& [k, p] : {std::pair{0, 1.0}, std::pair{40, 1.0}, std::pair{0, 0.9}, std::pair{200, 0.95}}) {
    SamplingOptions o;
    o.temperature = 0.8;
    o.top_k = k;
    o.top_p = p;
    const auto kept = reference_kept(z, o);
    const torch::Tensor dist = sampling_distribution(logits, o);
    torch::Tensor want = torch::zeros({50257}, torch::kDouble);
    for (const auto& [id, prob] : kept) want[id] = prob;
    EXPECT_LT((dist - want).abs().max().item<double>(), 1e-12) << "top_k " << k << ", top_p " << p;
    // The draw's order: rank order after a filter, id order without one.
    auto order = kept;
    if (k == 0 && p == 1.0) std::sort(order.begin(), order.end());
    std::mt19937_64 ours(9), theirs(9);
    for (int draw = 0; draw < 200; ++draw) {
      const double u = std::uniform_real_distribution<double>(0.0, 1.0)(theirs);
      double cumulative = 0;
      int64_t expected = order.back().first;
      for (const auto& [id, prob] : order) {
        cumulative += prob;
        if (u < cumulative) {
          expected = id;
          break;
        }
      }
      ASSERT_EQ(sample_next_token(logits, o, ours), expected) << "draw " << draw << ", top_k " << k << ", top_p " << p;
    }
  }
}

// sample_rows (the batched draw, ATen operators on the logits' device) chooses what
// sample_next_token chooses row by row from the same uniforms, for every kind of filter, on
// GPT-2-sized rows with ties and on tiny ones; a generator's state after either is the same.
TEST(Sampling, RowsDrawAsOneRowAtATime) {
  torch::manual_seed(21);
  for (const int64_t V : {int64_t{5}, int64_t{50257}}) {
    const torch::Tensor logits = (torch::randn({12, V}, torch::kFloat) * 3).round() / 2;  // many ties
    struct Options {
      double temperature;
      int64_t top_k;
      double top_p;
    };
    for (const Options& f : {Options{0, 0, 1}, Options{0.8, 0, 1}, Options{1, 1, 1}, Options{0.8, 40, 1},
                             Options{0.8, 0, 0.9}, Options{1.3, 200, 0.95}, Options{0.8, 0, 0.01}}) {
      SamplingOptions o;
      o.temperature = f.temperature, o.top_k = f.top_k, o.top_p = f.top_p;
      for (int round = 0; round < 20; ++round) {
        std::vector<double> uniforms;
        std::vector<int64_t> want;
        for (int64_t i = 0; i < logits.size(0); ++i) {
          const uint64_t seed = 1000 * round + i;
          std::mt19937_64 draws(seed), ours(seed);
          uniforms.push_back(std::uniform_real_distribution<double>(0.0, 1.0)(draws));
          want.push_back(sample_next_token(logits[i], o, ours));
          if (o.temperature > 0) EXPECT_EQ(ours, draws) << "one uniform a token";
        }
        if (o.temperature == 0) uniforms.clear();
        EXPECT_EQ(sample_rows(logits, o, uniforms), want)
            << "V " << V << ", T " << o.temperature << ", top_k " << o.top_k << ", top_p " << o.top_p << ", round " << round;
      }
    }
  }
  SamplingOptions o;
  EXPECT_ANY_THROW(sample_rows(torch::zeros({2, 3}), o, {0.5}));  // a uniform a row
  EXPECT_ANY_THROW(sample_rows(torch::zeros({3}), o, {0.5}));
}

TEST(Sampling, RefusesBadOptions) {
  std::mt19937_64 rng(1);
  SamplingOptions o;
  o.top_p = 0;
  EXPECT_ANY_THROW(sample_next_token(row({1, 2}), o, rng));
  o = SamplingOptions{};
  o.temperature = -1;
  EXPECT_ANY_THROW(sample_next_token(row({1, 2}), o, rng));
}

}  // namespace
}  // namespace hydra::model
