// What one rank writes into its checkpoint file, copied to host memory at a step boundary:
// its weight parts (dp rank 0 of each slice, primary parts only) and its optimizer parts, each
// with its attributes and catalog line. Taking the snapshot is the only part of a save that
// must happen between two steps; writing it can run in a background thread
// (checkpoint/async_save.h), and a synchronous save writes the very same snapshot.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/catalog.h"
#include "checkpoint/checkpoint.h"

namespace hydra::checkpoint {

struct SnapshotDataset {
  std::string object;  // "/model/<name>" or "/optim/<group>/<name>"
  at::Tensor data;     // a host copy, contiguous, owned by the snapshot
  std::vector<std::pair<std::string, std::vector<int64_t>>> attrs;
};

struct RankSnapshot {
  int rank = 0;
  int64_t step = 0;
  int64_t optim_step = -1;  // -1: no optimizer state
  std::vector<SnapshotDataset> datasets;
  std::vector<CatalogEntry> catalog;
};

RankSnapshot take_snapshot(const SaveRequest& req, const parallel::NamedParams& params,
                           const parallel::FlatLayout& layout, const std::vector<const parallel::AdamWState*>& optims);

// Writes the rank file (the catalog last), closes and fsyncs it. Calls only HDF5 and the
// file system, so it may run in a background thread while no other thread uses HDF5.
void write_snapshot(const RankSnapshot& snapshot, const std::string& path);

}  // namespace hydra::checkpoint
