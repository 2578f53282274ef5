// checkpoint.async: at a step boundary the tensors are copied to host memory (a snapshot);
// a background thread writes this rank's file while training goes on; the collective commit
// (barrier, index, rename, COMMIT) runs on the main thread when the next save starts, at the
// end of the run, or on preemption, so that no MPI/NCCL call is ever made off the main
// thread. The writer thread is the only user of HDF5 while it runs (Debian's HDF5 is not
// built thread-safe): nothing else in training touches HDF5.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/snapshot.h"

namespace hydra::checkpoint {

class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter() = default;
  // Waits for an unfinished write; never commits it (the directory stays step_N.tmp, which
  // is never loaded).
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Collective. Prepares step_N.tmp, takes the snapshot and starts writing it. A write still
  // pending must be finished first (finish()). Returns the directory it will commit.
  std::string start(const SaveRequest& req, const parallel::NamedParams& params, const parallel::FlatLayout& layout,
                    const std::vector<const parallel::AdamWState*>& optims, parallel::Communicator* world);

  bool pending() const { return pending_; }

  struct Finished {
    std::string dir;        // the committed checkpoint ("" when nothing was pending)
    double wait_ms = 0;     // how long this call waited for the writer thread
    double write_ms = 0;    // how long the writer thread took to write the file
  };
  // Collective when a write is pending on any rank (all ranks call it at the same points):
  // joins the writer (rethrowing its error), then commits.
  Finished finish(parallel::Communicator* world);

 private:
  void join();

  std::thread thread_;
  bool pending_ = false;
  SaveRequest request_;
  std::unique_ptr<RankSnapshot> snapshot_;  // owned by the writer thread while it runs
  int64_t optim_step_ = -1;
  std::exception_ptr error_;
  double write_ms_ = 0;
};

}  // namespace hydra::checkpoint
