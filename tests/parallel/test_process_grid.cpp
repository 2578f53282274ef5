// The process grid against an independent brute-force enumeration: for every world size up to
// 8 and every factorisation dp x tp x pp, walk the grid with nested loops (pp slowest, tp
// fastest: the documented rank order) and compare every rank's coordinates, groups and
// pipeline neighbours with make_process_grid. Plus resolve_grid_shape's inference and errors.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/errors.h"
#include "parallel/process_grid.h"

namespace hydra::parallel {
namespace {

struct Coord3 {
  int pp, dp, tp;
};

// rank -> (pp, dp, tp) by counting through the nested loops.
std::vector<Coord3> enumerate(const GridShape& s) {
  std::vector<Coord3> coords;
  for (int pp = 0; pp < s.pp; ++pp) {
    for (int dp = 0; dp < s.dp; ++dp) {
      for (int tp = 0; tp < s.tp; ++tp) coords.push_back({pp, dp, tp});
    }
  }
  return coords;
}

// The ranks whose coordinates equal `me` except on the free axis, in increasing order of the
// free coordinate (found by scanning that coordinate, not by sorting ranks).
std::vector<int> brute_group(const std::vector<Coord3>& coords, const Coord3& me, char free_axis,
                             int extent) {
  std::vector<int> group;
  for (int k = 0; k < extent; ++k) {
    Coord3 want = me;
    (free_axis == 't' ? want.tp : free_axis == 'd' ? want.dp : want.pp) = k;
    for (size_t r = 0; r < coords.size(); ++r) {
      const Coord3& c = coords[r];
      if (c.pp == want.pp && c.dp == want.dp && c.tp == want.tp)
        group.push_back(static_cast<int>(r));
    }
  }
  return group;
}

std::vector<GridShape> factorisations(int world) {
  std::vector<GridShape> shapes;
  for (int dp = 1; dp <= world; ++dp) {
    for (int tp = 1; tp <= world; ++tp) {
      for (int pp = 1; pp <= world; ++pp) {
        if (dp * tp * pp == world) shapes.push_back(GridShape{dp, tp, pp});
      }
    }
  }
  return shapes;
}

TEST(ProcessGrid, MatchesBruteForceForEveryFactorisationUpTo8) {
  int shapes_checked = 0;
  for (int world = 1; world <= 8; ++world) {
    for (const GridShape& s : factorisations(world)) {
      ++shapes_checked;
      const std::vector<Coord3> coords = enumerate(s);
      ASSERT_EQ(static_cast<int>(coords.size()), world);
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE("dp" + std::to_string(s.dp) + " tp" + std::to_string(s.tp) + " pp" +
                     std::to_string(s.pp) + " rank " + std::to_string(rank));
        const Coord3& me = coords[static_cast<size_t>(rank)];
        const ProcessGrid g = make_process_grid(s, rank);
        EXPECT_EQ(g.rank, rank);
        EXPECT_EQ(g.coord.pp, me.pp);
        EXPECT_EQ(g.coord.dp, me.dp);
        EXPECT_EQ(g.coord.tp, me.tp);
        EXPECT_EQ(rank_of(s, g.coord), rank);
        EXPECT_EQ(g.tp_ranks, brute_group(coords, me, 't', s.tp));
        EXPECT_EQ(g.dp_ranks, brute_group(coords, me, 'd', s.dp));
        const std::vector<int> pipeline = brute_group(coords, me, 'p', s.pp);
        EXPECT_EQ(g.pp_ranks, pipeline);
        EXPECT_EQ(g.pp_prev, me.pp > 0 ? pipeline[static_cast<size_t>(me.pp - 1)] : -1);
        EXPECT_EQ(g.pp_next, me.pp + 1 < s.pp ? pipeline[static_cast<size_t>(me.pp + 1)] : -1);
        EXPECT_EQ(g.first_stage(), me.pp == 0);
        EXPECT_EQ(g.last_stage(), me.pp == s.pp - 1);
        // Sanity of the enumeration itself: tp neighbours are consecutive ranks.
        EXPECT_EQ(g.tp_ranks.front(), rank - me.tp);
      }
    }
  }
  // 1:1, 2:3, 3:3, 4:6, 5:3, 6:9, 7:3, 8:10 ordered factorisations.
  EXPECT_EQ(shapes_checked, 38);
}

TEST(ResolveGridShape, InfersDpWhenZero) {
  const GridShape s = resolve_grid_shape(8, 0, 2, 2);
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.tp, 2);
  EXPECT_EQ(s.pp, 2);
  EXPECT_EQ(resolve_grid_shape(6, 0, 3, 1).dp, 2);
  EXPECT_EQ(resolve_grid_shape(1, 0, 1, 1).dp, 1);
  const GridShape explicit_shape = resolve_grid_shape(4, 4, 1, 1);
  EXPECT_EQ(explicit_shape.world(), 4);
}

// Expects resolve_grid_shape to throw ConfigError whose message names every key in `keys`.
void expect_config_error(int world, int dp, int tp, int pp, const std::vector<std::string>& keys) {
  SCOPED_TRACE("world " + std::to_string(world) + " dp " + std::to_string(dp) + " tp " +
               std::to_string(tp) + " pp " + std::to_string(pp));
  try {
    resolve_grid_shape(world, dp, tp, pp);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const common::ConfigError& e) {
    EXPECT_EQ(e.code(), common::ExitCode::kUsage);
    for (const std::string& key : keys)
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(ResolveGridShape, RejectsDegreesThatDoNotMultiplyToTheWorld) {
  expect_config_error(4, 3, 1, 1, {"parallel.dp", "parallel.tp", "parallel.pp"});
  expect_config_error(8, 2, 2, 1, {"parallel.dp", "parallel.tp", "parallel.pp"});
  expect_config_error(6, 0, 4, 1, {"parallel.tp", "parallel.pp"});  // 4 does not divide 6
  expect_config_error(8, 0, 1, 3, {"parallel.pp"});
  expect_config_error(4, 0, 0, 1, {"parallel.tp"});
  expect_config_error(4, 0, 1, 0, {"parallel.pp"});
  expect_config_error(4, -1, 1, 1, {"parallel.dp"});
}

}  // namespace
}  // namespace hydra::parallel
