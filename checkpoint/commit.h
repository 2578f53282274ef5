// The collective steps of a save around the rank files (docs/CHECKPOINT.md "Save protocol"),
// shared by synchronous and asynchronous saves. Both run on the main thread of every rank.
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"

namespace hydra::checkpoint {

// Rank 0 empties <root>/step_N.tmp (a leftover of a save that died) and creates it; barrier.
// Returns the path of the rank file this rank writes there.
std::string begin_save(const SaveRequest& req, parallel::Communicator* world);

// Barrier (every rank's file is written and fsynced); rank 0 joins the ranks' catalogs into
// index.h5 (with `optim_step`, -1: none), renames step_N.tmp to step_N, writes COMMIT and
// prunes beyond checkpoint.keep; barrier. Returns the committed directory.
std::string commit_save(const SaveRequest& req, int64_t optim_step, parallel::Communicator* world);

// After a save failed on this rank (its file, or rank 0's commit before COMMIT): removes the
// partial step_N.tmp (never loaded, and on a full disk it would keep the disk full and fail
// the next save too) and returns the error to throw (exit 4), naming `error`, what was
// removed and the last complete checkpoint, which `--resume latest` continues from.
common::RuntimeFailure abandon_save(const SaveRequest& req, const std::string& error);

}  // namespace hydra::checkpoint
