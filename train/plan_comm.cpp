#include "train/plan_comm.h"

#include <cmath>

namespace hydra::train {

double curve_seconds(const CommCurve& curve, double bytes) {
  const auto& p = curve.points;
  if (bytes <= p.front().first) return p.front().second;
  if (bytes >= p.back().first) return p.back().second * bytes / p.back().first;
  size_t i = 1;
  while (p[i].first < bytes) ++i;
  const double f = std::log(bytes / p[i - 1].first) / std::log(p[i].first / p[i - 1].first);
  return std::exp(std::log(p[i - 1].second) + f * (std::log(p[i].second) - std::log(p[i - 1].second)));
}

double allreduce_seconds(double bytes, int n, const Link& link) {
  if (n <= 1) return 0;
  if (link.all_reduce.ranks == n && !link.all_reduce.points.empty()) return curve_seconds(link.all_reduce, bytes);
  return 2.0 * (n - 1) * link.latency + 2.0 * (n - 1) / n * bytes / link.bandwidth;
}

double reduce_scatter_seconds(double bytes, int n, const Link& link) {
  if (n <= 1) return 0;
  return (n - 1) * link.latency + static_cast<double>(n - 1) / n * bytes / link.bandwidth;
}

double all_gather_seconds(double bytes, int n, const Link& link) { return reduce_scatter_seconds(bytes, n, link); }

double p2p_seconds(double bytes, const Link& link) { return link.latency + bytes / link.bandwidth; }

double bubble_fraction(int pp, int micro_batches) {
  return micro_batches > 0 ? static_cast<double>(pp - 1) / micro_batches : 0.0;
}

}  // namespace hydra::train
