#include "parallel/nccl_communicator.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/errors.h"
#include "parallel/collective_log.h"
#include "parallel/mpi_session.h"

namespace hydra::parallel {

void throw_nccl_error(int code, const char* call, const char* file, int line) {
  HYDRA_FAIL(common::RuntimeFailure, file << ":" << line << ": " << call << " failed on rank "
                                          << world_rank_or_unknown() << ": "
                                          << ncclGetErrorString(static_cast<ncclResult_t>(code)));
}

void throw_cuda_error(int code, const char* call, const char* file, int line) {
  HYDRA_FAIL(common::RuntimeFailure, file << ":" << line << ": " << call << " failed on rank "
                                          << world_rank_or_unknown() << ": "
                                          << cudaGetErrorString(static_cast<cudaError_t>(code)));
}

namespace {

using common::RuntimeFailure;

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    default: break;
  }
  HYDRA_FAIL(RuntimeFailure, "NCCL communicator: unsupported dtype " << t);
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

int64_t nbytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// A call handed to the watchdog: its sequence number and the event recorded after it.
struct Pending {
  uint64_t seq = 0;
  cudaEvent_t event = nullptr;
  CollectiveClock::time_point enqueued;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, std::vector<int> world_ranks, std::string name,
                   double timeout_s, int world_rank);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void send(const at::Tensor& tensor, int peer) override;
  void recv(at::Tensor& tensor, int peer) override;
  void exchange(const at::Tensor& out, int send_peer, at::Tensor& in, int recv_peer) override;
  void barrier() override;
  // Not measured: calls return once enqueued (see the header).
  std::optional<HostWait> host_wait() const override { return std::nullopt; }
  CallTotals call_totals() const override { return log_.totals(); }
  bool capturable() const override { return false; }

  ncclComm_t comm() const { return comm_; }
  int device() const { return device_; }
  int world_rank() const { return world_rank_; }

 private:
  std::string device_refusal(const at::Device& device) const override;
  cudaStream_t stream() const {
    return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
  }
  // Records an event after call `seq` on `stream` and hands it to the watchdog.
  void enqueued(uint64_t seq, cudaStream_t stream);
  void poll_loop();
  void deadline_loop();
  // Reports call `seq` (why: empty for a timeout, else the error) and exits with code 4.
  [[noreturn]] void fail(uint64_t seq, const std::string& why);

  ncclComm_t comm_;               // owned: finalized and destroyed in the destructor
  int device_;                    // CUDA device of comm_
  std::vector<int> world_ranks_;  // group rank -> world rank
  std::string name_;              // "world", "tp", ...
  double timeout_s_;              // per call, see the header
  int world_rank_;                // for reports
  int rank_ = 0;                  // rank in comm_
  int size_ = 1;                  // size of comm_
  CollectiveLog log_;             // recent calls, for the timeout report

  // The watchdog is two threads. The poller asks CUDA whether the oldest pending call is done;
  // the deadline thread makes no CUDA call at all and only compares clocks. A CUDA call can
  // block while another thread of the process waits on the GPU (seen on H200: cudaEventDestroy
  // in the poller hung behind the main thread's synchronous copy), and such a block must not
  // hide a timeout. Events are created and destroyed by the calling thread only and reused.
  std::mutex mutex_;                       // guards everything below except the threads
  std::condition_variable wake_;           // a call was enqueued or completed, or stop
  std::deque<Pending> pending_;            // calls not yet seen complete, in enqueue order
  std::vector<cudaEvent_t> free_events_;   // completed events, for reuse
  CollectiveClock::time_point last_done_;  // when the poller saw the previous call complete
  bool stopping_ = false;                  // destructor: drain pending_, then end the threads
  std::atomic<bool> failing_{false};       // the first failure report wins
  std::thread poller_;                     // started last, after everything above exists
  std::thread deadline_;
};

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::vector<int> world_ranks,
                                   std::string name, double timeout_s, int world_rank)
    : comm_(comm),
      device_(device),
      world_ranks_(std::move(world_ranks)),
      name_(std::move(name)),
      timeout_s_(timeout_s),
      world_rank_(world_rank) {
  HYDRA_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  HYDRA_NCCL_CHECK(ncclCommCount(comm_, &size_));
  HYDRA_CHECK(size_ == static_cast<int>(world_ranks_.size()) &&
                  world_ranks_[static_cast<size_t>(rank_)] == world_rank_,
              "NCCL communicator '" << name_ << "' has rank " << rank_ << " of " << size_
                                    << ", which does not match its rank list");
  last_done_ = CollectiveClock::now();
  poller_ = std::thread([this] { poll_loop(); });
  deadline_ = std::thread([this] { deadline_loop(); });
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  poller_.join();  // returns once every call completed (or the process ended with code 4)
  deadline_.join();
  for (cudaEvent_t event : free_events_) cudaEventDestroy(event);  // nothing left to report
  // Destructors must not throw: report failures and go on. Finalize is collective, so every
  // rank destroys its communicators in the same order (ParallelContext does).
  if (const ncclResult_t rc = ncclCommFinalize(comm_); rc != ncclSuccess) {
    log_warning("ncclCommFinalize('" + name_ + "'): " + ncclGetErrorString(rc));
  }
  if (const ncclResult_t rc = ncclCommDestroy(comm_); rc != ncclSuccess) {
    log_warning("ncclCommDestroy('" + name_ + "'): " + ncclGetErrorString(rc));
  }
}

std::string NcclCommunicator::device_refusal(const at::Device& device) const {
  if (device.is_cuda() && device.index() == device_) return "";
  return "this NCCL communicator works on cuda:" + std::to_string(device_);
}

void NcclCommunicator::enqueued(uint64_t seq, cudaStream_t stream) {
  cudaEvent_t event = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_events_.empty()) {
      event = free_events_.back();
      free_events_.pop_back();
    }
  }
  if (event == nullptr) HYDRA_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  const cudaError_t rc = cudaEventRecord(event, stream);
  if (rc != cudaSuccess) {
    cudaEventDestroy(event);
    HYDRA_CUDA_CHECK(rc);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back(Pending{seq, event, CollectiveClock::now()});
  }
  wake_.notify_all();
}

void NcclCommunicator::poll_loop() {
  // The events belong to this device's context.
  if (const cudaError_t rc = cudaSetDevice(device_); rc != cudaSuccess) {
    fail(0, std::string("watchdog cudaSetDevice: ") + cudaGetErrorString(rc));
  }
  constexpr auto kPollInterval = std::chrono::milliseconds(2);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) {
      if (stopping_) return;
      continue;
    }
    // Only this thread pops, so the front stays put while the lock is released; CUDA and
    // NCCL are asked without the lock so that the calling and deadline threads never wait.
    const Pending front = pending_.front();
    lock.unlock();
    const cudaError_t state = cudaEventQuery(front.event);
    ncclResult_t async = ncclSuccess;
    const ncclResult_t async_rc =
        state == cudaErrorNotReady ? ncclCommGetAsyncError(comm_, &async) : ncclSuccess;
    lock.lock();
    if (state == cudaSuccess) {
      log_.end(front.seq);
      free_events_.push_back(front.event);
      pending_.pop_front();
      last_done_ = CollectiveClock::now();  // the next call's clock starts no earlier
      wake_.notify_all();
      continue;
    }
    if (state != cudaErrorNotReady) {
      fail(front.seq, std::string("CUDA error: ") + cudaGetErrorString(state));
    }
    if (async_rc != ncclSuccess || async != ncclSuccess) {
      const char* detail = ncclGetLastError(comm_);
      fail(front.seq, std::string("NCCL error: ") + ncclGetErrorString(async) + " (" +
                          (detail ? detail : "") + ")");
    }
    lock.unlock();
    std::this_thread::sleep_for(kPollInterval);
    lock.lock();
  }
}

void NcclCommunicator::deadline_loop() {
  constexpr auto kCheckInterval = std::chrono::milliseconds(50);
  const auto limit = std::chrono::duration_cast<CollectiveClock::duration>(
      std::chrono::duration<double>(timeout_s_));
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (pending_.empty()) {
      if (stopping_) return;
    } else {
      const Pending& front = pending_.front();
      const auto start = std::max(last_done_, front.enqueued);
      if (CollectiveClock::now() - start > limit) fail(front.seq, "");
    }
    wake_.wait_for(lock, kCheckInterval);
  }
}

void NcclCommunicator::fail(uint64_t seq, const std::string& why) {
  if (failing_.exchange(true)) {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the first one exits
  }
  CollectiveRecord stuck;
  if (auto r = log_.find(seq)) stuck = *r;
  const GroupIdentity me{name_, world_ranks_, rank_, world_rank_};
  const std::string report =
      format_timeout_report(stuck, me, timeout_s_, log_.recent(), CollectiveClock::now(), why);
  // No ncclCommAbort before exiting: it would unblock the host thread that waits on the stuck
  // call, which then runs on with a wrong result and may exit first with another code (seen
  // on H200: the probe's main thread got past its wait while the abort ran). _exit ends the
  // process at once; the driver frees the GPU resources and mpirun stops the other ranks.
  stop_run_on_timeout(report, TimeoutExit::kProcessExit);
}

void NcclCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce", "tensor");
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("all_reduce", nbytes(tensor));
  HYDRA_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(),
                                 static_cast<size_t>(tensor.numel()),
                                 nccl_type(tensor.scalar_type()), nccl_op(op), comm_, s));
  enqueued(seq, s);
}

// Padded layout for uneven parts: part r of `numel` (shard_range) sits at row r of a
// [size, chunk] matrix, chunk = ceil(numel / size). The first `extra` parts fill their row;
// the others leave the last column unused. Two strided copies move any number of parts.
struct PaddedLayout {
  int64_t chunk = 0;  // elements per row
  int64_t extra = 0;  // rows with `chunk` elements; the rest have chunk - 1
  int64_t rows = 0;   // = size
  bool even() const { return extra == 0; }
};

PaddedLayout padded_layout(int64_t numel, int size) {
  PaddedLayout l;
  l.rows = size;
  l.extra = numel % size;
  l.chunk = numel / size + (l.extra ? 1 : 0);
  return l;
}

// Copies between the flat buffer and its padded matrix, in the direction chosen.
void copy_padded(const PaddedLayout& l, const at::Tensor& flat, const at::Tensor& padded,
                 bool to_padded) {
  const at::Tensor matrix = padded.view({l.rows, l.chunk});
  const int64_t full = l.extra * l.chunk;  // elements in the full rows
  at::Tensor flat_full = flat.narrow(0, 0, full).view({l.extra, l.chunk});
  at::Tensor pad_full = matrix.narrow(0, 0, l.extra);
  const int64_t short_len = l.chunk - 1;
  const int64_t short_rows = l.rows - l.extra;
  if (full > 0) (to_padded ? pad_full.copy_(flat_full) : flat_full.copy_(pad_full));
  if (short_len > 0 && short_rows > 0) {
    at::Tensor flat_short =
        flat.narrow(0, full, short_rows * short_len).view({short_rows, short_len});
    at::Tensor pad_short = matrix.narrow(0, l.extra, short_rows).narrow(1, 0, short_len);
    (to_padded ? pad_short.copy_(flat_short) : flat_short.copy_(pad_short));
  }
}

void NcclCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  check_tensor(input, "reduce_scatter", "input");
  check_tensor(output, "reduce_scatter", "output");
  if (input.scalar_type() != output.scalar_type()) {
    HYDRA_FAIL(RuntimeFailure, "reduce_scatter on '" << name_ << "': input is "
                                                     << input.scalar_type() << " but output is "
                                                     << output.scalar_type());
  }
  const Range mine = shard_range(input.numel(), size_, rank_);
  if (output.numel() != mine.size()) {
    HYDRA_FAIL(RuntimeFailure, "reduce_scatter on '" << name_ << "': output has " << output.numel()
                                                     << " elements, expected " << mine.size());
  }
  const PaddedLayout l = padded_layout(input.numel(), size_);
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("reduce_scatter", nbytes(input));
  at::Tensor send = input;
  at::Tensor receive = output;
  if (!l.even()) {
    send = at::empty({l.rows * l.chunk}, input.options());
    copy_padded(l, input, send, /*to_padded=*/true);
    if (output.numel() != l.chunk) receive = at::empty({l.chunk}, output.options());
  }
  if (l.chunk > 0) {
    HYDRA_NCCL_CHECK(ncclReduceScatter(send.data_ptr(), receive.data_ptr(),
                                       static_cast<size_t>(l.chunk), nccl_type(input.scalar_type()),
                                       nccl_op(op), comm_, s));
  }
  if (!receive.is_same(output)) output.copy_(receive.narrow(0, 0, output.numel()));
  enqueued(seq, s);
}

void NcclCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_tensor(input, "all_gather", "input");
  check_tensor(output, "all_gather", "output");
  if (input.scalar_type() != output.scalar_type()) {
    HYDRA_FAIL(RuntimeFailure, "all_gather on '" << name_ << "': input is " << input.scalar_type()
                                                 << " but output is " << output.scalar_type());
  }
  const Range mine = shard_range(output.numel(), size_, rank_);
  if (input.numel() != mine.size()) {
    HYDRA_FAIL(RuntimeFailure, "all_gather on '" << name_ << "': input has " << input.numel()
                                                 << " elements, expected " << mine.size());
  }
  const PaddedLayout l = padded_layout(output.numel(), size_);
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("all_gather", nbytes(input));
  at::Tensor send = input;
  at::Tensor receive = output;
  if (!l.even()) {
    if (input.numel() != l.chunk) {
      send = at::empty({l.chunk}, input.options());
      send.narrow(0, 0, input.numel()).copy_(input);  // the pad element is never read back
    }
    receive = at::empty({l.rows * l.chunk}, output.options());
  }
  if (l.chunk > 0) {
    HYDRA_NCCL_CHECK(ncclAllGather(send.data_ptr(), receive.data_ptr(),
                                   static_cast<size_t>(l.chunk), nccl_type(input.scalar_type()),
                                   comm_, s));
  }
  if (!receive.is_same(output)) copy_padded(l, output, receive, /*to_padded=*/false);
  enqueued(seq, s);
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast", "tensor");
  check_peer(root, "broadcast", "root");
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("broadcast", nbytes(tensor));
  HYDRA_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(),
                                 static_cast<size_t>(tensor.numel()),
                                 nccl_type(tensor.scalar_type()), root, comm_, s));
  enqueued(seq, s);
}

void NcclCommunicator::send(const at::Tensor& tensor, int peer) {
  check_tensor(tensor, "send", "tensor");
  check_peer(peer, "send", "peer");
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("send", nbytes(tensor));
  HYDRA_NCCL_CHECK(ncclSend(tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                            nccl_type(tensor.scalar_type()), peer, comm_, s));
  enqueued(seq, s);
}

void NcclCommunicator::recv(at::Tensor& tensor, int peer) {
  check_tensor(tensor, "recv", "tensor");
  check_peer(peer, "recv", "peer");
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("recv", nbytes(tensor));
  HYDRA_NCCL_CHECK(ncclRecv(tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                            nccl_type(tensor.scalar_type()), peer, comm_, s));
  enqueued(seq, s);
}

void NcclCommunicator::exchange(const at::Tensor& out, int send_peer, at::Tensor& in, int recv_peer) {
  check_tensor(out, "exchange", "out");
  check_tensor(in, "exchange", "in");
  check_peer(send_peer, "exchange", "send_peer");
  check_peer(recv_peer, "exchange", "recv_peer");
  const cudaStream_t s = stream();
  const uint64_t seq = log_.begin("exchange", nbytes(out) + nbytes(in));
  // One group: NCCL starts both together, so a pair exchanging with each other cannot block.
  HYDRA_NCCL_CHECK(ncclGroupStart());
  HYDRA_NCCL_CHECK(ncclSend(out.data_ptr(), static_cast<size_t>(out.numel()), nccl_type(out.scalar_type()), send_peer,
                            comm_, s));
  HYDRA_NCCL_CHECK(ncclRecv(in.data_ptr(), static_cast<size_t>(in.numel()), nccl_type(in.scalar_type()), recv_peer,
                            comm_, s));
  HYDRA_NCCL_CHECK(ncclGroupEnd());
  enqueued(seq, s);
}

void NcclCommunicator::barrier() {
  // NCCL has no barrier: a one-element all-reduce, then the host waits for the stream (the
  // watchdog still ends the run if it never completes).
  const cudaStream_t s = stream();
  at::Tensor token = at::empty({1}, at::TensorOptions()
                                        .dtype(at::kFloat)
                                        .device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)));
  const uint64_t seq = log_.begin("barrier", 0);
  HYDRA_NCCL_CHECK(
      ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm_, s));
  enqueued(seq, s);
  HYDRA_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace

std::unique_ptr<Communicator> make_nccl_world_communicator(MPI_Comm world, int device,
                                                           double timeout_s) {
  HYDRA_CHECK(timeout_s > 0, "timeout " << timeout_s << " s must be > 0");
  int rank = 0;
  int size = 1;
  HYDRA_MPI_CHECK(MPI_Comm_rank(world, &rank));
  HYDRA_MPI_CHECK(MPI_Comm_size(world, &size));
  int devices = 0;
  HYDRA_CUDA_CHECK(cudaGetDeviceCount(&devices));
  if (device < 0 || device >= devices) {
    HYDRA_FAIL(RuntimeFailure, "rank " << rank << " needs CUDA device " << device
                                       << " but this node has " << devices
                                       << " (one GPU per process on a node)");
  }
  HYDRA_CUDA_CHECK(cudaSetDevice(device));  // before any NCCL call: the comm binds to it
  ncclUniqueId id{};
  if (rank == 0) HYDRA_NCCL_CHECK(ncclGetUniqueId(&id));
  HYDRA_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, world));
  ncclComm_t comm = nullptr;
  HYDRA_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  std::vector<int> ranks(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) ranks[static_cast<size_t>(r)] = r;
  return std::make_unique<NcclCommunicator>(comm, device, std::move(ranks), "world", timeout_s,
                                            rank);
}

std::unique_ptr<Communicator> split_nccl_communicator(Communicator& parent,
                                                      const std::vector<int>& world_ranks,
                                                      std::string name, double timeout_s) {
  auto* nccl_parent = dynamic_cast<NcclCommunicator*>(&parent);
  HYDRA_CHECK(nccl_parent != nullptr,
              "split_nccl_communicator: parent '" << parent.name() << "' is not NCCL");
  HYDRA_CHECK(timeout_s > 0, "timeout " << timeout_s << " s must be > 0");
  const int me = nccl_parent->world_rank();
  const auto mine = std::find(world_ranks.begin(), world_ranks.end(), me);
  if (mine == world_ranks.end()) {
    HYDRA_FAIL(RuntimeFailure, "communicator '" << name << "': rank " << me
                                                << " is not in the group it is creating");
  }
  // Color = the group's smallest world rank (unique among disjoint groups); key = position
  // in the list, so group ranks follow the list order.
  const int color = *std::min_element(world_ranks.begin(), world_ranks.end());
  const int key = static_cast<int>(mine - world_ranks.begin());
  ncclComm_t comm = nullptr;
  HYDRA_NCCL_CHECK(ncclCommSplit(nccl_parent->comm(), color, key, &comm, nullptr));
  return std::make_unique<NcclCommunicator>(comm, nccl_parent->device(), world_ranks,
                                            std::move(name), timeout_s, me);
}

}  // namespace hydra::parallel
