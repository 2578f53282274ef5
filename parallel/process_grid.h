// The process grid: world = dp x tp x pp, ranks ordered with tp fastest, then dp, then pp
// (Megatron's convention), so that a tensor-parallel group is a run of consecutive ranks —
// on one node whenever tp <= GPUs per node — and pipeline stages are the slowest axis.
//
//   rank = tp_rank + tp * (dp_rank + dp * pp_rank)
//
// Pure arithmetic: no MPI, no tensors; tests enumerate it exhaustively.
#pragma once

#include <string>
#include <vector>

namespace hydra::parallel {

enum class Axis { kTensor, kData, kPipeline };
const char* axis_name(Axis axis);  // "tp", "dp", "pp"

struct GridShape {
  int dp = 1;
  int tp = 1;
  int pp = 1;
  int world() const { return dp * tp * pp; }
};

struct GridCoord {
  int dp = 0;
  int tp = 0;
  int pp = 0;
  int along(Axis axis) const;
};

int rank_of(const GridShape& shape, const GridCoord& coord);
GridCoord coord_of(const GridShape& shape, int rank);

// The ranks that share every coordinate with `rank` except those along `axes`, in rank
// order. One axis gives that axis's group; {kTensor, kPipeline} gives the model-parallel
// group; all three give the world.
std::vector<int> group_ranks(const GridShape& shape, int rank, const std::vector<Axis>& axes);

// Resolves the grid from the world size and the configured degrees. dp = 0 means "the rest":
// world / (tp * pp). Throws ConfigError naming parallel.dp/tp/pp when they do not multiply
// to the world size.
GridShape resolve_grid_shape(int world, int dp, int tp, int pp);

// What one rank knows about its place in the grid.
struct ProcessGrid {
  GridShape shape;
  int rank = 0;
  GridCoord coord;
  std::vector<int> tp_ranks;  // world ranks of this rank's tensor-parallel group
  std::vector<int> dp_ranks;  // ... data-parallel group
  std::vector<int> pp_ranks;  // ... pipeline group (stage order)
  int pp_prev = -1;           // world rank of the previous pipeline stage, -1 on the first
  int pp_next = -1;           // world rank of the next pipeline stage, -1 on the last
  bool first_stage() const { return coord.pp == 0; }
  bool last_stage() const { return coord.pp == shape.pp - 1; }
};

ProcessGrid make_process_grid(const GridShape& shape, int rank);

}  // namespace hydra::parallel
