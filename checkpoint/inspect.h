// `hydra ckpt inspect`: what a checkpoint directory holds, verified. Reads the index as every
// load does (read_index), then each rank file as a load opens and reads it (RankFiles,
// read_part) after checking its size and whole-file CRC-32 against the index, then every
// other dataset; summarises step, tokens, layout, parameter count, files and sizes, and names
// each damaged file with its problem (dataset, block, checksums).
#pragma once

#include <string>

#include "common/json.h"

namespace hydra::checkpoint {

struct InspectReport {
  common::Json json;     // the whole report (hydra ckpt inspect --json)
  std::string text;      // the same for people
  bool verified = false; // every file present and every checksum right
  std::string problem;   // the first problem found, naming file and dataset (each file's in json["files"])
};

// Never throws for a damaged checkpoint: damage is reported in `problem`.
InspectReport inspect_checkpoint(const std::string& dir);

}  // namespace hydra::checkpoint
