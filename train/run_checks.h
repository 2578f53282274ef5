// What `hydra train` checks before it builds the model, so that a run fails in a second with
// exit 2 naming the key and path, not hours later at its first save:
//   - checkpoint.dir (every rank) and the folder of log.jsonl (rank 0) can be created and
//     written: a probe file is written and removed;
//   - a new run (no --resume) does not land on an earlier run's checkpoints or metrics rows,
//     which it would mix with and prune; --overwrite sets them aside (set_aside_earlier_run);
//   - a resumed run keeps the settings its checkpoint fixes (train/resume_rules.h).
// Every rank agrees (one collective): any rank's problem stops all of them.
#pragma once

#include <string>
#include <vector>

#include "parallel/parallel_context.h"
#include "train/run_config.h"
#include "train/trainer.h"

namespace hydra::train {

// What an earlier run left where this one writes (found on rank 0).
struct EarlierRun {
  std::vector<std::string> checkpoints;  // step_* entries of checkpoint.dir, committed or not
  long long metrics_rows = 0;            // non-empty lines of an existing log.jsonl
  bool empty() const { return checkpoints.empty() && metrics_rows == 0; }
};

// Throws ConfigError (or InputError for an unreadable resume checkpoint) on every rank when
// any rank finds a problem. Returns what --overwrite will set aside.
EarlierRun check_run_start(const RunConfig& config, const RunRequest& request,
                           parallel::ParallelContext& ctx);

// --overwrite: rank 0 moves the earlier run's step_* entries into
// <checkpoint.dir>/replaced_<UTC time>/ and its metrics file to <log.jsonl>.replaced_<UTC time>.
// Called after --init-from has loaded (its checkpoint may be among them). Collective.
void set_aside_earlier_run(const RunConfig& config, const EarlierRun& earlier,
                           parallel::ParallelContext& ctx);

}  // namespace hydra::train
