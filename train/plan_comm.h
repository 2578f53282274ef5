// The cost formulas of `hydra plan` (docs/SCALING.md): alpha-beta times of ring collectives
// (latency per step + bytes over the bus bandwidth) and the 1F1B pipeline bubble. Pure
// arithmetic: no config, no MPI.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace hydra::train {

// A measured collective (`hydra bench comm`): seconds at message sizes, bytes ascending, on
// `ranks` ranks. Small messages do not follow latency + bytes / bandwidth on every machine
// (MPI switches algorithms with the size), so a measured curve is read where it exists.
struct CommCurve {
  int ranks = 0;
  std::vector<std::pair<double, double>> points;  // (bytes, seconds)
};

// The curve's time at `bytes`: log-log interpolation between measured sizes; below the
// smallest its time, above the largest its time scaled by bytes (bandwidth-bound).
double curve_seconds(const CommCurve& curve, double bytes);

// One link class: bandwidth per GPU in bytes/s, latency per message in seconds, and the
// all-reduce measured on it when a comm file was given.
struct Link {
  double bandwidth = 0;
  double latency = 0;
  CommCurve all_reduce;
};

// All-reduce of `bytes` over n ranks: the link's measured curve when it was measured on n
// ranks, else a ring's 2(n-1) latency steps and 2(n-1)/n * bytes on the wire per rank. 0 for
// n <= 1.
double allreduce_seconds(double bytes, int n, const Link& link);
// Ring reduce-scatter or all-gather (`bytes` is the whole buffer): (n-1) steps, (n-1)/n * bytes.
double reduce_scatter_seconds(double bytes, int n, const Link& link);
double all_gather_seconds(double bytes, int n, const Link& link);
// One point-to-point message.
double p2p_seconds(double bytes, const Link& link);
// 1F1B: the bubble is (p-1)/m of the ideal (bubble-free) time (Narayanan et al. 2021, eq. 1).
double bubble_fraction(int pp, int micro_batches);

}  // namespace hydra::train
