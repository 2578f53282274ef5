// The collective steps of a save around the rank files (docs/CHECKPOINT.md "Save protocol"),
// shared by synchronous and asynchronous saves. Both run on the main thread of every rank.
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/checkpoint.h"

namespace hydra::checkpoint {

// Rank 0 empties <root>/step_N.tmp (a leftover of a save that died) and creates it; barrier.
// Returns the path of the rank file this rank writes there.
std::string begin_save(const SaveRequest& req, parallel::Communicator* world);

// Barrier (every rank's file is written and fsynced); rank 0 joins the ranks' catalogs into
// index.h5 (with `optim_step`, -1: none), renames step_N.tmp to step_N, writes COMMIT and
// prunes beyond checkpoint.keep; barrier. Returns the committed directory.
std::string commit_save(const SaveRequest& req, int64_t optim_step, parallel::Communicator* world);

}  // namespace hydra::checkpoint
