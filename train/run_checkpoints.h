// A run's checkpoints: saving at a step boundary (in the background with checkpoint.async),
// committing a background save, and restoring for --resume and --init-from. The format and
// its files are checkpoint/'s; this is what the loop does with them.
#pragma once

#include <string>
#include <vector>

#include "checkpoint/weights_file.h"
#include "train/run.h"
#include "train/trainer.h"

namespace hydra::train {

// Saves at this step boundary. checkpoint.async: commits the previous save, copies the state
// to host memory and leaves the file to a background thread; otherwise writes and commits
// now. Returns the directory (committed, or to be committed by finish_async_save).
std::string save(Run& run, const std::string& config_json);

// Commits a pending checkpoint.async save (collective: every rank has one pending at the same
// points); "" if none. The wait for the writer thread and the commit count as a stall.
std::string finish_async_save(Run& run);

// --resume: the checkpoint's weights, optimizer state and data position; --init-from: its
// weights alone, with fresh master weights and moments from them.
void restore(Run& run, const RunRequest& request);

// Weights only (hydra eval, --init-from), frozen parameters included, from a checkpoint
// directory or a consolidated file (checkpoint/weights_file.h); returns the source's step.
// `config_json`: this run's resolved config, which a failed load compares with the source's
// (load_weights_explained).
checkpoint::LoadedCheckpoint load_weights(Run& run, const std::string& source, const std::string& config_json);

// checkpoint::load_weights, and when it fails (a checkpoint of another model shape, say) the
// model settings in which `source`'s stored config differs from `config_json` (this run's)
// added to the error: the setting behind the shapes, for example model.ccqa.compress, whose
// default changed on 2026-12-06. (hydra generate loads through it as well.)
checkpoint::LoadedCheckpoint load_weights_explained(const std::string& source, const parallel::NamedParams& params,
                                                    const std::vector<model::ShardInfo>& placements,
                                                    const std::string& config_json);

// The world communicator, null for one process.
parallel::Communicator* world_of(Run& run);

}  // namespace hydra::train
