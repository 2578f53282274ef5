// What a communicator remembers about its recent collectives, and how a timeout ends the run.
//
// Every call on a Communicator gets the next sequence number of that communicator and a
// record here (op, bytes, start, end). When a call does not complete within the timeout the
// report names the stuck call, the group (name and world ranks), its sequence number, the
// timeout and this rank, followed by the recent records: comparing the reports of two ranks
// shows at once which one skipped or reordered a collective.
//
// Why exit code 4 reaches the caller (checked with Open MPI 4.1 by experiment):
// - MPI_Abort(MPI_COMM_WORLD, 4): mpirun returns 4 and kills the other ranks at once (~1 s).
//   Used by the MPI backend, whose waits run on the MPI thread.
// - _exit(4) without MPI_Finalize: mpirun also returns the exit code of the first rank that
//   failed, after a short grace period (~3 s). Used from the NCCL watchdog thread, which must
//   not call MPI (MPI_THREAD_FUNNELED) and must not run static destructors under a live
//   CUDA context.
// A plain process (no mpirun) exits with 4 either way.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace hydra::parallel {

using CollectiveClock = std::chrono::steady_clock;

struct CollectiveRecord {
  uint64_t seq = 0;                   // per-communicator sequence number, from 0
  const char* op = "";                // "all_reduce", "send", ... (a string literal)
  int64_t bytes = 0;                  // payload of this rank (input buffer)
  CollectiveClock::time_point start;  // when the call was issued
  CollectiveClock::time_point end;    // when it was seen complete (valid if done)
  bool done = false;
};

// Every call a communicator has made since it was made: how many, and this rank's payload
// bytes (`hydra bench step` reports them per step and group).
struct CallTotals {
  int64_t calls = 0;
  int64_t bytes = 0;
};

// A ring of the last `capacity` records, and the running totals of every call. Thread-safe:
// the NCCL watchdog marks records done while the calling thread adds new ones.
class CollectiveLog {
 public:
  static constexpr size_t kDefaultCapacity = 32;
  explicit CollectiveLog(size_t capacity = kDefaultCapacity);

  // Records a new call and returns its sequence number.
  uint64_t begin(const char* op, int64_t bytes);
  // Marks call `seq` complete (ignored when it has already left the ring).
  void end(uint64_t seq);
  // The record of `seq` if it is still in the ring.
  std::optional<CollectiveRecord> find(uint64_t seq) const;
  // The records in the ring, oldest first.
  std::vector<CollectiveRecord> recent() const;
  // Every call so far (the ring forgets; these do not).
  CallTotals totals() const;

 private:
  mutable std::mutex mutex_;
  std::vector<CollectiveRecord> ring_;  // slot seq % capacity
  uint64_t next_seq_ = 0;               // sequence number of the next call
  int64_t bytes_ = 0;                   // payload of every call so far
};

// Who is reporting: the group a communicator spans and this process's place in it.
struct GroupIdentity {
  std::string name;              // "world", "tp", "dp", "pp", ...
  std::vector<int> world_ranks;  // group rank -> world rank
  int group_rank = 0;
  int world_rank = 0;
};

// The multi-line report (no trailing newline): `stuck` is the call that timed out, or that
// failed with `failure` (e.g. an asynchronous NCCL error) when that is not empty.
std::string format_timeout_report(const CollectiveRecord& stuck, const GroupIdentity& group,
                                  double timeout_s, const std::vector<CollectiveRecord>& recent,
                                  CollectiveClock::time_point now, const std::string& failure = "");

enum class TimeoutExit {
  kMpiAbort,     // MPI_Abort(MPI_COMM_WORLD, 4); only from the thread that owns MPI
  kProcessExit,  // _exit(4); from any thread
};

// Logs `report` with spdlog::error (and to stderr if the logger would drop it), flushes
// everything, then ends the process with exit code 4 as chosen by `how`.
[[noreturn]] void stop_run_on_timeout(const std::string& report, TimeoutExit how);

// A warning through the default spdlog logger, for code that cannot include spdlog (files
// that include LibTorch headers: in the CUDA build LibTorch's bundled fmt clashes with the
// fmt that spdlog is built against).
void log_warning(const std::string& message);

}  // namespace hydra::parallel
