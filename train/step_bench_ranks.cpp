// `hydra bench step`'s figures of every rank: each rank's own waits and memory, gathered so
// that rank 0 can report the mean and the slowest rank, and each rank's memory.
#include <cmath>
#include <limits>

#include "parallel/rank_values.h"
#include "train/step_bench.h"

namespace hydra::train {
namespace {

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();  // an unmeasured wait on the wire

double encode(const std::optional<double>& v) { return v ? *v : kNone; }
std::optional<double> decode(double v) { return std::isnan(v) ? std::nullopt : std::optional<double>(v); }

}  // namespace

void set_wait_figures(RankStepFigures& figures, const std::optional<parallel::HostWait>& before,
                      const std::optional<parallel::HostWait>& after, int steps) {
  if (!before || !after || steps < 1) return;
  const double per_step_ms = 1e3 / steps;
  figures.collective_wait_ms = (after->collective_s - before->collective_s) * per_step_ms;
  figures.recv_wait_ms = (after->recv_s - before->recv_s) * per_step_ms;
  figures.send_wait_ms = (after->send_s - before->send_s) * per_step_ms;
}

std::vector<RankStepFigures> gather_rank_figures(const RankStepFigures& mine, parallel::ParallelContext& ctx,
                                                 const at::Device& device) {
  // The order of the fields on the wire; decoded below in the same order.
  const std::vector<double> values = {mine.step_ms,           encode(mine.collective_wait_ms),
                                      encode(mine.recv_wait_ms), encode(mine.send_wait_ms),
                                      mine.peak_allocated_gb, mine.peak_reserved_gb,
                                      mine.device_used_gb,    mine.predicted_peak_gb};
  std::vector<RankStepFigures> out;
  for (const std::vector<double>& v : parallel::gather_rank_values(*ctx.world, values, device)) {
    RankStepFigures f;
    f.step_ms = v[0];
    f.collective_wait_ms = decode(v[1]);
    f.recv_wait_ms = decode(v[2]);
    f.send_wait_ms = decode(v[3]);
    f.peak_allocated_gb = v[4];
    f.peak_reserved_gb = v[5];
    f.device_used_gb = v[6];
    f.predicted_peak_gb = v[7];
    out.push_back(f);
  }
  return out;
}

}  // namespace hydra::train
