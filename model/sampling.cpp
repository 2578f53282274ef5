#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/errors.h"

namespace hydra::model {
namespace {

// Ids by decreasing logit, the lower id first among equals, sorted only as far as asked: a
// draw usually stops within the first few dozen ranks of a 50k vocabulary.
class Ranking {
 public:
  explicit Ranking(const std::vector<double>& z) : z_(z), order_(z.size()) {
    std::iota(order_.begin(), order_.end(), 0);
  }
  size_t size() const { return order_.size(); }
  // The id at rank i (i < size()).
  int64_t at(size_t i) {
    if (i == 0 && sorted_ == 0) first_largest();
    if (i >= sorted_) sort_to(std::max({i + 1, 2 * sorted_, size_t{64}}));
    return order_[i];
  }
  double logit_at(size_t i) { return z_[static_cast<size_t>(at(i))]; }

 private:
  // Rank 0 alone (greedy, and the softmax's shift) by one pass: the first largest to the front.
  void first_largest() {
    size_t best = 0;
    for (size_t j = 1; j < z_.size(); ++j) {
      if (z_[j] > z_[best]) best = j;
    }
    std::swap(order_[0], order_[best]);
    sorted_ = 1;
  }
  void sort_to(size_t m) {
    m = std::min(m, order_.size());
    // order_[0, sorted_) already holds the largest in rank order: rank the next ones among the rest.
    std::partial_sort(order_.begin() + static_cast<std::ptrdiff_t>(sorted_), order_.begin() + static_cast<std::ptrdiff_t>(m),
                      order_.end(), [this](int64_t a, int64_t b) { return z_[a] > z_[b] || (z_[a] == z_[b] && a < b); });
    sorted_ = m;
  }
  const std::vector<double>& z_;
  std::vector<int64_t> order_;
  size_t sorted_ = 0;
};

void check_options(const SamplingOptions& o) {
  HYDRA_CHECK(o.temperature >= 0 && o.top_k >= 0 && o.top_p > 0 && o.top_p <= 1,
              "sampling: temperature " << o.temperature << ", top_k " << o.top_k << ", top_p " << o.top_p);
}

// The logits as float64 on the host, checked with the options.
std::vector<double> logits_row(const torch::Tensor& logits, const SamplingOptions& o) {
  HYDRA_CHECK(logits.dim() == 1 && logits.size(0) > 0, "sampling: logits must be one non-empty row");
  check_options(o);
  const torch::Tensor cpu = logits.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = cpu.data_ptr<double>();
  return std::vector<double>(p, p + cpu.numel());
}

// The kept ranks [0, kept) of z and the probability of each: softmax of z / T over the top k,
// renormalised over the top-p prefix. Greedy (T 0) keeps rank 0 alone.
struct Filtered {
  Filtered(const std::vector<double>& z, const SamplingOptions& o) : ranking(z), temperature(o.temperature) {
    if (o.temperature == 0) return;
    const size_t V = ranking.size();
    const size_t k = o.top_k > 0 ? std::min<size_t>(static_cast<size_t>(o.top_k), V) : V;
    // Stable: subtract the largest.
    top = ranking.logit_at(0) / temperature;
    double sum = 0;
    if (k == V) {  // every id: ATen's vectorised exp and sum over the row (a view of z, no copy)
      const torch::Tensor row = torch::from_blob(const_cast<double*>(z.data()), {static_cast<int64_t>(V)}, torch::kDouble);
      weights = (row / temperature - top).exp_();
      sum = weights.sum().item<double>();
    } else {
      for (size_t i = 0; i < k; ++i) sum += std::exp(ranking.logit_at(i) / temperature - top);
    }
    norm = sum;
    kept = k;
    unfiltered = k == V && o.top_p == 1;
    if (o.top_p < 1) {
      double cumulative = 0;
      size_t n = 0;
      while (n < k && cumulative < o.top_p) cumulative += prob(n++);
      kept = n;
      norm = sum * cumulative;
    }
  }
  double prob(size_t rank) { return std::exp(ranking.logit_at(rank) / temperature - top) / norm; }

  Ranking ranking;
  double temperature;
  size_t kept = 1;
  bool unfiltered = false;  // no filter asked: the draw runs over the ids in id order
  double top = 0, norm = 1;
  torch::Tensor weights;  // nothing filtered: exp(z / T - top) of every id, in id order
};

}  // namespace

int64_t sample_next_token(const torch::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng) {
  const std::vector<double> z = logits_row(logits, options);
  // Every token drawn at a temperature consumes one uniform, even where the filters keep one id,
  // so that sample_rows (whose kept counts are known only on the device) consumes the same.
  const double u = options.temperature > 0 ? std::uniform_real_distribution<double>(0.0, 1.0)(rng) : 0.0;
  Filtered f(z, options);
  if (f.kept == 1) return f.ranking.at(0);
  double cumulative = 0;
  if (f.unfiltered) {
    // Nothing filtered: the inversion runs over the ids in id order, which needs no ranking (a
    // flat distribution would otherwise rank thousands of ids for one draw), on the weights
    // the normaliser summed (an exp per id again here cost about 0.4 ms a row of 50k ids:
    // the most of a batch's sampling; docs/PERF.md 2026-12-05).
    const double* w = f.weights.data_ptr<double>();
    const double target = u * f.norm;  // u < cumulative / norm, without a division per id
    for (size_t id = 0; id < z.size(); ++id) {
      cumulative += w[id];
      if (target < cumulative) return static_cast<int64_t>(id);
    }
    return static_cast<int64_t>(z.size()) - 1;  // u within rounding of 1
  }
  for (size_t i = 0; i < f.kept; ++i) {
    cumulative += f.prob(i);
    if (u < cumulative) return f.ranking.at(i);
  }
  return f.ranking.at(f.kept - 1);  // u within rounding of 1
}

std::vector<int64_t> sample_rows(const torch::Tensor& logits, const SamplingOptions& o,
                                 const std::vector<double>& uniforms) {
  HYDRA_CHECK(logits.dim() == 2 && logits.size(0) > 0 && logits.size(1) > 0,
              "sampling: logits must be [rows, vocabulary], got " << logits.sizes());
  check_options(o);
  const int64_t rows = logits.size(0), V = logits.size(1);
  HYDRA_CHECK(o.temperature == 0 || static_cast<int64_t>(uniforms.size()) == rows,
              "sampling: " << uniforms.size() << " uniforms for " << rows << " rows");
  torch::NoGradGuard no_grad;
  const int64_t k = o.top_k > 0 ? std::min<int64_t>(o.top_k, V) : V;
  torch::Tensor ids;
  if (o.temperature == 0 || k == 1) {
    ids = logits.argmax(1);  // the first largest
  } else {
    const torch::Tensor z = logits.to(torch::kDouble) / o.temperature;
    const torch::Tensor u = torch::tensor(uniforms, torch::kDouble).to(z.device()).unsqueeze(1);
    if (k == V && o.top_p == 1) {
      // Nothing filtered: ids in id order, as sample_next_token.
      const torch::Tensor c = (z - z.amax(1, true)).exp_().cumsum(1);
      ids = torch::searchsorted(c, u * c.narrow(1, V - 1, 1), false, /*right=*/true).squeeze(1).clamp_max(V - 1);
    } else {
      // Ranked by decreasing logit, the lower id first among equals (a stable sort), the top k
      // kept; then the top-p prefix: n = 1 + the ranks whose cumulative probability is below p.
      auto [zs, order] = z.sort(/*stable=*/true, 1, /*descending=*/true);
      zs = zs.narrow(1, 0, k);
      const torch::Tensor c = (zs - zs.narrow(1, 0, 1)).exp_().cumsum(1);
      torch::Tensor n = torch::full({rows, 1}, k, order.options());
      if (o.top_p < 1) n = ((c / c.narrow(1, k - 1, 1)) < o.top_p).sum(1, true).add_(1).clamp_max_(k);
      const torch::Tensor kept_sum = c.gather(1, n - 1);
      // The first rank whose running sum exceeds u times the kept sum (u within rounding of 1: the last kept).
      const torch::Tensor rank = torch::minimum(torch::searchsorted(c, u * kept_sum, false, /*right=*/true), n - 1);
      ids = order.gather(1, rank).squeeze(1);
    }
  }
  const torch::Tensor host = ids.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + rows);
}

torch::Tensor sampling_distribution(const torch::Tensor& logits, const SamplingOptions& options) {
  const std::vector<double> z = logits_row(logits, options);
  Filtered f(z, options);
  torch::Tensor out = torch::zeros({logits.size(0)}, torch::kDouble);
  double* p = out.data_ptr<double>();
  if (f.temperature == 0) {
    p[f.ranking.at(0)] = 1.0;
    return out;
  }
  for (size_t i = 0; i < f.kept; ++i) p[f.ranking.at(i)] = f.prob(i);
  return out;
}

}  // namespace hydra::model
