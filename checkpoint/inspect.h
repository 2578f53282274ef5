// `hydra ckpt inspect`: what a checkpoint directory holds, verified. Reads the index and
// every rank file, recomputes every dataset's CRC-32, and summarises step, tokens, layout,
// parameter count, files and sizes.
#pragma once

#include <string>

#include "common/json.h"

namespace hydra::checkpoint {

struct InspectReport {
  common::Json json;     // the whole report (hydra ckpt inspect --json)
  std::string text;      // the same for people
  bool verified = false; // every file present and every checksum right
  std::string problem;   // the first problem found, naming file and dataset
};

// Never throws for a damaged checkpoint: damage is reported in `problem`.
InspectReport inspect_checkpoint(const std::string& dir);

}  // namespace hydra::checkpoint
