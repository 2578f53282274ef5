// model/sampling.h against distributions worked out by hand: greedy, temperature, top-k,
// top-p, the tie order, and draws whose frequencies match the distribution.
#include <gtest/gtest.h>

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
