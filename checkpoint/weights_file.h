// Weights for a new run or for generation from either source a user has: a checkpoint
// directory (`step_N`) or the one-file form `hydra ckpt consolidate` writes (docs/CHECKPOINT.md
// "Consolidated weights"), so that a consolidated file handed to a colleague is as good as the
// run's directory for --init-from and `hydra generate --checkpoint`.
#pragma once

#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "model/shard_info.h"
#include "parallel/flat_layout.h"

namespace hydra::checkpoint {

// Whether `path` names a consolidated weights file (a regular file; a checkpoint is a
// directory).
bool is_weights_file(const std::string& path);

// Loads the parameter values of `params` (placed as in SaveRequest::placements; empty: every
// parameter whole) from `path`: a checkpoint directory (load_checkpoint, weights only) or a
// consolidated file, of which each rank reads the rows of each dataset that meet its part
// (vocabulary padding reads as zero). The result carries the source's step, tokens and
// config; for a file `dir` is the file. InputError naming the file and dataset for a file that
// is not a consolidated one, a parameter it lacks or one of another shape.
LoadedCheckpoint load_weights(const std::string& path, const parallel::NamedParams& params,
                              const std::vector<model::ShardInfo>& placements = {});

// The config stored with the weights at `path` (a checkpoint directory's index or a consolidated
// file's attribute; "" when it holds none), read without loading any weights. InputError as
// load_weights for a path that is neither.
std::string stored_config(const std::string& path);

}  // namespace hydra::checkpoint
