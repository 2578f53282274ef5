// The typed run configuration: one struct per section of docs/INTERFACE.md. Loaded and
// validated once by the launcher's load_config() (launcher/config_load.cpp) from defaults,
// the preset, the YAML file and --set overrides; every component reads its section from here
// and nothing else. It lives in train/, the lowest folder that reads every section (a run),
// so that train/ never includes the launcher above it; the launcher calls it Config.
// Defaults live in one place: the member initialisers of these structs; the schema
// (launcher/config_schema.cpp) adds types, ranges and choices.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/config.h"
#include "data/config.h"
#include "model/config.h"
#include "parallel/config.h"
#include "train/config.h"

namespace hydra::train {

struct LogConfig {
  int every = 10;
  std::string jsonl;              // metrics file; empty: none
  std::string level = "info";     // trace|debug|info|warn|error
  bool all_ranks = false;
};

struct RunConfig {
  model::ModelConfig model;
  parallel::ParallelConfig parallel;
  train::TrainConfig train;
  data::DataConfig data;
  checkpoint::CheckpointConfig checkpoint;
  LogConfig log;
  std::string source;             // the config file it came from (for messages)
};

// Sequences per forward on each of `dp` data-parallel ranks: train.micro_batch, or
// global_batch / (dp x parallel.micro_batches) rounded down when it is 0 (the trainer's
// batch split refuses sizes that do not divide, naming the key).
inline int64_t per_rank_micro_batch(const RunConfig& c, int dp) {
  return c.train.micro_batch > 0 ? c.train.micro_batch : c.train.global_batch / dp / c.parallel.micro_batches;
}

}  // namespace hydra::train
