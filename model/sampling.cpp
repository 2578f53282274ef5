#include "model/sampling.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "common/errors.h"

namespace hydra::model {
namespace {

// Ids by decreasing logit, the lower id first among equals.
std::vector<int64_t> ranked_ids(const std::vector<double>& z) {
  std::vector<int64_t> order(z.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  return order;
}

// The kept ids (in rank order) and their probabilities, renormalised.
struct Kept {
  std::vector<int64_t> ids;
  std::vector<double> probs;
};

Kept filter(const torch::Tensor& logits, const SamplingOptions& o) {
  HYDRA_CHECK(logits.dim() == 1 && logits.size(0) > 0, "sampling: logits must be one non-empty row");
  HYDRA_CHECK(o.temperature >= 0 && o.top_k >= 0 && o.top_p > 0 && o.top_p <= 1,
              "sampling: temperature " << o.temperature << ", top_k " << o.top_k << ", top_p " << o.top_p);
  const torch::Tensor cpu = logits.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = cpu.data_ptr<double>();
  std::vector<double> z(p, p + cpu.numel());
  const std::vector<int64_t> order = ranked_ids(z);
  Kept kept;
  if (o.temperature == 0) {
    kept.ids = {order.front()};
    kept.probs = {1.0};
    return kept;
  }
  const size_t k = o.top_k > 0 ? std::min<size_t>(static_cast<size_t>(o.top_k), order.size()) : order.size();
  // Softmax of z / T over the top k, stable: subtract the largest.
  const double top = z[order.front()] / o.temperature;
  double sum = 0;
  for (size_t i = 0; i < k; ++i) {
    const double e = std::exp(z[order[i]] / o.temperature - top);
    kept.ids.push_back(order[i]);
    kept.probs.push_back(e);
    sum += e;
  }
  for (double& q : kept.probs) q /= sum;
  if (o.top_p < 1) {
    double cumulative = 0;
    size_t n = 0;
    while (n < kept.probs.size() && cumulative < o.top_p) cumulative += kept.probs[n++];
    kept.ids.resize(n);
    kept.probs.resize(n);
    for (double& q : kept.probs) q /= cumulative;
  }
  return kept;
}

}  // namespace

int64_t sample_next_token(const torch::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng) {
  const Kept kept = filter(logits, options);
  if (kept.ids.size() == 1) return kept.ids.front();
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  double cumulative = 0;
  for (size_t i = 0; i < kept.ids.size(); ++i) {
    cumulative += kept.probs[i];
    if (u < cumulative) return kept.ids[i];
  }
  return kept.ids.back();  // u within rounding of 1
}

torch::Tensor sampling_distribution(const torch::Tensor& logits, const SamplingOptions& options) {
  const Kept kept = filter(logits, options);
  torch::Tensor out = torch::zeros({logits.size(0)}, torch::kDouble);
  double* p = out.data_ptr<double>();
  for (size_t i = 0; i < kept.ids.size(); ++i) p[kept.ids[i]] = kept.probs[i];
  return out;
}

}  // namespace hydra::model
