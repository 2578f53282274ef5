// Training checkpoints (docs/CHECKPOINT.md). A checkpoint is a directory
//   <checkpoint.dir>/step_<8 digits>/
//     index.h5          rank 0: format, version, step, consumed samples, layout, config, files,
//                       and the catalog of every stored tensor part
//     rank_<5 digits>.h5  per rank: its parameters and optimizer state in parameter space
//     COMMIT            written last; a directory without it is never loaded
// Every tensor is stored under its model name with the parameter's global shape and the
// offset of the part as attributes, so a checkpoint is read by name and region, never as
// ranges of a flat buffer, and loads into any (dp, tp, pp, ZeRO stage, micro-batches).
//
// Save protocol: each rank writes into step_N.tmp/, fsyncs its file; barrier; rank 0 joins
// the ranks' catalogs into the index, fsyncs, renames step_N.tmp -> step_N, writes COMMIT,
// fsyncs the directory, then deletes the oldest complete checkpoints beyond checkpoint.keep.
// checkpoint/async_save.h runs the same steps with the rank file written in the background.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/catalog.h"
#include "checkpoint/file_checksum.h"
#include "parallel/adamw.h"
#include "parallel/communicator.h"
#include "model/shard_info.h"
#include "parallel/flat_layout.h"

namespace hydra::checkpoint {

// 2: parts carry their real global offset (tp slices), the global shape excludes vocabulary
// padding, and index.h5 holds the catalog. Version 1 checkpoints are refused.
constexpr int kFormatVersion = 2;

// Training position: with the seed it fixes the data order (data/), so resume is exact.
struct Progress {
  int64_t step = 0;              // optimizer steps completed
  int64_t consumed_samples = 0;  // sequences consumed, all data-parallel ranks together
  int64_t tokens = 0;
  int64_t skipped = 0;           // non-finite steps skipped
};

struct SaveRequest {
  std::string root;                       // checkpoint.dir
  int keep = 3;
  Progress progress;
  std::string config_json;                // the resolved config as JSON (launcher config_to_json)
  std::map<std::string, int64_t> layout;  // world, dp, tp, pp, zero_stage, micro_batches
  int rank = 0;
  int world = 1;
  // Whether this rank writes /model/*: data-parallel replicas hold the same weights, so only
  // one replica (dp rank 0) of each tp slice writes them; every rank writes its optimizer part.
  bool write_weights = true;
  // Where each of `params` sits in its whole parameter (HydraModelImpl::placements), in the
  // same order; empty: every parameter whole, written by this rank. Parts that are not
  // `primary` (replicas another rank writes) are skipped, weights and optimizer state alike.
  std::vector<model::ShardInfo> placements;
};

// Saves; returns the committed directory. `optim` may be null (weights only). `world_comm`
// may be null for a single process; otherwise every rank calls this together.
std::string save_checkpoint(const SaveRequest& request, const parallel::NamedParams& params,
                            const parallel::FlatLayout& layout, const parallel::AdamWState* optim,
                            parallel::Communicator* world_comm);
// The same with the optimizer state in several ranges of the flat space (the ZeRO optimizer
// keeps one per bucket, parallel/zero_optimizer.h). The ranges must not share a parameter:
// each parameter is stored at most once per rank file.
std::string save_checkpoint(const SaveRequest& request, const parallel::NamedParams& params,
                            const parallel::FlatLayout& layout, const std::vector<const parallel::AdamWState*>& optim,
                            parallel::Communicator* world_comm);

struct LoadedCheckpoint {
  std::string dir;
  Progress progress;
  std::string config_json;  // the stored config (SaveRequest::config_json)
  std::map<std::string, int64_t> layout;
  int64_t optim_step = -1;  // AdamW's step count, -1 when the checkpoint holds no optimizer state
  std::map<std::string, FileChecksum> files;  // rank file name -> bytes and CRC-32 (index)
  std::vector<CatalogEntry> catalog;          // every stored part (index.h5's /catalog)
  int64_t bytes_read = 0;  // dataset bytes load_checkpoint read from the rank files
};

// Reads the index of a committed checkpoint, its catalog's checksum verified: the first step of
// every reader (load, consolidate, inspect), so that all refuse the same things. InputError
// naming what is wrong otherwise (no such directory, not a checkpoint, no COMMIT marker,
// another format or version, a damaged index).
LoadedCheckpoint read_index(const std::string& dir);

// Loads parameter values (and, if `optim` is given, the optimizer state of its ranges) into
// this rank's tensors from whatever rank files hold the overlapping parts, whatever layout
// wrote them. `placements` as in SaveRequest (empty: every parameter whole). A checkpoint of
// another model shape, or one missing a part this rank needs, is an InputError naming the
// parameter (and the file where one is involved). Reads only the files and datasets that
// overlap this rank's parts, and of each dataset only the CRC blocks (whole rows) that hold
// elements this rank needs; every block read is verified.
LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, parallel::AdamWState* optim,
                                 const std::vector<model::ShardInfo>& placements = {});
// The same for several optimizer ranges (the ZeRO optimizer's buckets): any dp size, ZeRO
// stage, bucket plan or tp size loads any other.
LoadedCheckpoint load_checkpoint(const std::string& dir, const parallel::NamedParams& params,
                                 const parallel::FlatLayout& layout, const std::vector<parallel::AdamWState*>& optim,
                                 const std::vector<model::ShardInfo>& placements = {});

// The newest committed checkpoint under root, if any.
std::optional<std::string> find_latest(const std::string& root);
// Every committed checkpoint under root, newest first.
std::vector<std::string> list_committed(const std::string& root);

std::string step_dir_name(int64_t step);
// "rank_00003.h5": the file rank R writes in a checkpoint directory.
std::string rank_file_name(int rank);

}  // namespace hydra::checkpoint
