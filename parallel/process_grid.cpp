#include "parallel/process_grid.h"

#include <algorithm>

#include "common/errors.h"

namespace hydra::parallel {

const char* axis_name(Axis axis) {
  switch (axis) {
    case Axis::kTensor: return "tp";
    case Axis::kData: return "dp";
    case Axis::kPipeline: return "pp";
  }
  return "?";
}

int GridCoord::along(Axis axis) const {
  switch (axis) {
    case Axis::kTensor: return tp;
    case Axis::kData: return dp;
    case Axis::kPipeline: return pp;
  }
  return 0;
}

int rank_of(const GridShape& s, const GridCoord& c) { return c.tp + s.tp * (c.dp + s.dp * c.pp); }

GridCoord coord_of(const GridShape& s, int rank) {
  GridCoord c;
  c.tp = rank % s.tp;
  c.dp = (rank / s.tp) % s.dp;
  c.pp = rank / (s.tp * s.dp);
  return c;
}

std::vector<int> group_ranks(const GridShape& s, int rank, const std::vector<Axis>& axes) {
  auto free = [&](Axis a) { return std::find(axes.begin(), axes.end(), a) != axes.end(); };
  const GridCoord me = coord_of(s, rank);
  std::vector<int> ranks;
  for (int r = 0; r < s.world(); ++r) {
    const GridCoord c = coord_of(s, r);
    if ((free(Axis::kTensor) || c.tp == me.tp) && (free(Axis::kData) || c.dp == me.dp) &&
        (free(Axis::kPipeline) || c.pp == me.pp)) {
      ranks.push_back(r);
    }
  }
  return ranks;
}

GridShape resolve_grid_shape(int world, int dp, int tp, int pp) {
  using common::ConfigError;
  if (tp < 1) HYDRA_FAIL(ConfigError, "parallel.tp: expected an integer >= 1, got " << tp);
  if (pp < 1) HYDRA_FAIL(ConfigError, "parallel.pp: expected an integer >= 1, got " << pp);
  if (dp < 0) HYDRA_FAIL(ConfigError, "parallel.dp: expected 0 (auto) or >= 1, got " << dp);
  if (dp == 0) {
    if (world % (tp * pp) != 0) {
      HYDRA_FAIL(ConfigError, "parallel.tp x parallel.pp = " << tp << " x " << pp << " = " << tp * pp
                                  << " does not divide the world size " << world
                                  << " (set parallel.tp/pp so that world = dp x tp x pp)");
    }
    dp = world / (tp * pp);
  }
  if (dp * tp * pp != world) {
    HYDRA_FAIL(ConfigError, "parallel.dp x parallel.tp x parallel.pp = " << dp << " x " << tp << " x "
                                << pp << " = " << dp * tp * pp << ", but the world size is " << world
                                << " (launch with mpirun -np " << dp * tp * pp
                                << " or set parallel.dp: 0 to infer it)");
  }
  return GridShape{dp, tp, pp};
}

ProcessGrid make_process_grid(const GridShape& shape, int rank) {
  ProcessGrid g;
  g.shape = shape;
  g.rank = rank;
  g.coord = coord_of(shape, rank);
  g.tp_ranks = group_ranks(shape, rank, {Axis::kTensor});
  g.dp_ranks = group_ranks(shape, rank, {Axis::kData});
  g.pp_ranks = group_ranks(shape, rank, {Axis::kPipeline});
  if (!g.first_stage()) g.pp_prev = g.pp_ranks[static_cast<size_t>(g.coord.pp - 1)];
  if (!g.last_stage()) g.pp_next = g.pp_ranks[static_cast<size_t>(g.coord.pp + 1)];
  return g;
}

}  // namespace hydra::parallel
