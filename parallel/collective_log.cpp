#include "parallel/collective_log.h"

#include <mpi.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "common/errors.h"

namespace hydra::parallel {

namespace {

double seconds_between(CollectiveClock::time_point from, CollectiveClock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::ostringstream os;
  for (size_t i = 0; i < ranks.size(); ++i) os << (i ? "," : "") << ranks[i];
  return os.str();
}

}  // namespace

CollectiveLog::CollectiveLog(size_t capacity) : ring_(capacity == 0 ? 1 : capacity) {}

uint64_t CollectiveLog::begin(const char* op, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  CollectiveRecord& r = ring_[next_seq_ % ring_.size()];
  r.seq = next_seq_;
  r.op = op;
  r.bytes = bytes;
  r.start = CollectiveClock::now();
  r.end = r.start;
  r.done = false;
  bytes_ += bytes;
  return next_seq_++;
}

CallTotals CollectiveLog::totals() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {static_cast<int64_t>(next_seq_), bytes_};
}

void CollectiveLog::end(uint64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  CollectiveRecord& r = ring_[seq % ring_.size()];
  if (seq >= next_seq_ || r.seq != seq) return;
  r.end = CollectiveClock::now();
  r.done = true;
}

std::optional<CollectiveRecord> CollectiveLog::find(uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const CollectiveRecord& r = ring_[seq % ring_.size()];
  if (seq >= next_seq_ || r.seq != seq) return std::nullopt;
  return r;
}

std::vector<CollectiveRecord> CollectiveLog::recent() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t count = std::min<uint64_t>(next_seq_, ring_.size());
  std::vector<CollectiveRecord> out;
  out.reserve(count);
  for (uint64_t seq = next_seq_ - count; seq < next_seq_; ++seq) {
    out.push_back(ring_[seq % ring_.size()]);
  }
  return out;
}

std::string format_timeout_report(const CollectiveRecord& stuck, const GroupIdentity& group,
                                  double timeout_s, const std::vector<CollectiveRecord>& recent,
                                  CollectiveClock::time_point now, const std::string& failure) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(3);
  // First line: everything the test PATTERN and a person grepping logs look for.
  os << (failure.empty() ? "collective timeout: " : "collective failure: ") << stuck.op << " #"
     << stuck.seq << " on group '" << group.name << "' (world ranks "
     << join_ranks(group.world_ranks) << ") ";
  if (failure.empty()) {
    os << "did not complete within " << timeout_s << " s";
  } else {
    os << "failed (" << failure << ")";
  }
  os << " on world rank " << group.world_rank << " (group rank " << group.group_rank << " of "
     << group.world_ranks.size() << ", " << stuck.bytes << " bytes, waiting "
     << seconds_between(stuck.start, now) << " s)\n";
  if (failure.empty()) {
    os << "  likely cause: another rank of '" << group.name
       << "' did not make this call, made another call in its place, or is stuck before it;"
       << " compare with the other ranks' reports\n";
  }
  os << "  recent collectives on '" << group.name << "', oldest first (#seq op bytes started):";
  for (const CollectiveRecord& r : recent) {
    os << "\n    #" << r.seq << " " << r.op << " " << r.bytes << " B, started "
       << seconds_between(r.start, now) << " s ago, ";
    if (r.done) {
      os << "done in " << seconds_between(r.start, r.end) << " s";
    } else {
      os << "NOT DONE";
    }
  }
  return os.str();
}

void log_warning(const std::string& message) { spdlog::warn("{}", message); }

void stop_run_on_timeout(const std::string& report, TimeoutExit how) {
  const auto logger = spdlog::default_logger();
  if (logger && logger->should_log(spdlog::level::err)) {
    logger->error("{}", report);
    logger->flush();
  } else {
    std::fprintf(stderr, "%s\n", report.c_str());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const int code = static_cast<int>(common::ExitCode::kRuntime);
  if (how == TimeoutExit::kMpiAbort) {
    int initialized = 0;
    int finalized = 0;
    const bool live = MPI_Initialized(&initialized) == MPI_SUCCESS &&
                      MPI_Finalized(&finalized) == MPI_SUCCESS && initialized && !finalized;
    if (live) MPI_Abort(MPI_COMM_WORLD, code);  // does not return
  }
  // No exit handlers or static destructors: other threads may be inside MPI, CUDA or NCCL.
  _exit(code);
}

}  // namespace hydra::parallel
