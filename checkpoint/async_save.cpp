#include "checkpoint/async_save.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "checkpoint/commit.h"
#include "checkpoint/snapshot.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Testing aid: HYDRA_CKPT_WRITE_DELAY_MS makes the writer start that much later, so that a
// test can see training go on (and change the weights) while a write is pending.
int write_delay_ms() {
  const char* value = std::getenv("HYDRA_CKPT_WRITE_DELAY_MS");
  return value ? std::atoi(value) : 0;
}

}  // namespace

AsyncCheckpointWriter::~AsyncCheckpointWriter() { join(); }

void AsyncCheckpointWriter::join() {
  if (thread_.joinable()) thread_.join();
}

std::string AsyncCheckpointWriter::start(const SaveRequest& req, const parallel::NamedParams& params,
                                         const parallel::FlatLayout& layout,
                                         const std::vector<const parallel::AdamWState*>& optims,
                                         parallel::Communicator* world) {
  HYDRA_CHECK(!pending_, "AsyncCheckpointWriter: finish the pending save before starting another");
  std::string file;
  try {
    file = begin_save(req, world);
    snapshot_ = std::make_unique<RankSnapshot>(take_snapshot(req, params, layout, optims));
  } catch (const std::exception& e) {
    throw abandon_save(req, e.what());
  }
  request_ = req;
  optim_step_ = snapshot_->optim_step;
  error_ = nullptr;
  pending_ = true;
  thread_ = std::thread([this, file, delay = write_delay_ms()] {
    const auto begin = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    try {
      write_snapshot(*snapshot_, file);
    } catch (const std::exception& e) {
      // Cleaned up at once: a partial file on a full disk would fail training's other writes.
      try {
        error_ = std::make_exception_ptr(abandon_save(request_, e.what()));
      } catch (...) {
        error_ = std::current_exception();
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    write_ms_ = ms_since(begin);
  });
  return (std::filesystem::path(req.root) / step_dir_name(req.progress.step)).string();
}

AsyncCheckpointWriter::Finished AsyncCheckpointWriter::finish(parallel::Communicator* world) {
  Finished out;
  if (!pending_) return out;
  const auto begin = Clock::now();
  join();
  out.wait_ms = ms_since(begin);
  out.write_ms = write_ms_;
  pending_ = false;
  snapshot_.reset();  // the host copies are no longer needed
  // A rank whose write failed stops here with the error; the others wait at the commit's
  // barrier until the launcher ends the job, and nothing is committed.
  if (error_) std::rethrow_exception(error_);
  out.dir = commit_save(request_, optim_step_, world);
  return out;
}

}  // namespace hydra::checkpoint
