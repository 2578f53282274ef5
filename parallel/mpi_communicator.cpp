#include "parallel/mpi_communicator.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <functional>
#include <set>
#include <thread>

#include "common/errors.h"
#include "parallel/collective_log.h"
#include "parallel/mpi_session.h"
#include "parallel/poll_wait.h"

namespace hydra::parallel {

namespace {

using common::RuntimeFailure;

// Point-to-point tag. MPI keeps messages between one pair on one communicator and tag in
// order, so a single tag is enough for send/recv in program order.
constexpr int kP2pTag = 7;

// The MPI type a tensor travels as. bf16 is moved as raw 16-bit words; reductions of bf16
// go through fp32 and never use this type with an MPI_Op.
MPI_Datatype transfer_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kBFloat16: return MPI_UINT16_T;
    default: break;
  }
  HYDRA_FAIL(RuntimeFailure, "MPI communicator: unsupported dtype " << t);
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

int64_t nbytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

int as_count(int64_t n, const char* op) {
  if (n > INT_MAX) {
    HYDRA_FAIL(RuntimeFailure, op << ": " << n << " elements exceed the MPI count limit " << INT_MAX
                                  << "; split the tensor");
  }
  return static_cast<int>(n);
}

// The buffer a reduction runs on: the tensor itself, or an fp32 copy of a bf16 tensor.
at::Tensor reduction_buffer(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat) : t;
}

// Tag for MPI_Comm_create_group, one per group name: a rank may already be creating its dp
// group while a neighbour is still creating tp, and distinct tags keep the two creations'
// messages apart.
int creation_tag(const std::string& name) {
  return static_cast<int>(std::hash<std::string>{}(name) % 32000) + 1;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::vector<int> world_ranks, std::string name, double timeout_s)
      : comm_(comm),
        world_ranks_(std::move(world_ranks)),
        name_(std::move(name)),
        timeout_s_(timeout_s) {
    HYDRA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    HYDRA_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    HYDRA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
      // No throwing from a destructor; every call above completed, so this cannot block.
      MPI_Comm_free(&comm_);
    }
  }

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
  std::optional<HostWait> host_wait() const override { return waited_; }
  CallTotals call_totals() const override { return log_.totals(); }
  bool capturable() const override { return false; }

 private:
  // check_tensor, and the tensor within MPI's element count limit.
  void check_buffer(const at::Tensor& t, const char* op, const char* what) const;
  std::string device_refusal(const at::Device& device) const override;
  // Completes `request` or ends the run when call `seq` passes its deadline; adds the time it
  // blocked to `total` (one of waited_'s members).
  void wait(MPI_Request* request, uint64_t seq, double& total, MPI_Status* status = MPI_STATUS_IGNORE);
  // After a receive into `tensor` from `peer` completed with `status`: RuntimeFailure unless
  // exactly its numel elements arrived (a longer message already failed with MPI_ERR_TRUNCATE).
  void check_received(const MPI_Status& status, const at::Tensor& tensor, int peer, const char* op) const;
  [[noreturn]] void timed_out(uint64_t seq);
  // kAvg division and the bf16 round trip after a reduction into `buffer`.
  void finish_reduction(at::Tensor& buffer, at::Tensor& result, ReduceOp op) const;

  MPI_Comm comm_;                 // owned; freed in the destructor
  std::vector<int> world_ranks_;  // group rank -> rank of the parent (world)
  std::string name_;              // "world", "tp", ...
  double timeout_s_;              // per call
  int rank_ = 0;                  // rank in comm_
  int size_ = 1;                  // size of comm_
  int world_rank_ = 0;            // rank in MPI_COMM_WORLD, for reports
  CollectiveLog log_;             // recent calls, for the timeout report
  HostWait waited_;               // time blocked in wait(), by kind of call
  PollPolicy poll_policy_ = mpi_poll_policy();  // how wait() polls (poll_wait.h)
};

void MpiCommunicator::check_buffer(const at::Tensor& t, const char* op, const char* what) const {
  check_tensor(t, op, what);
  as_count(t.numel(), op);
}

std::string MpiCommunicator::device_refusal(const at::Device& device) const {
  return device.is_cpu() ? "" : "the MPI backend takes CPU tensors";
}

void MpiCommunicator::wait(MPI_Request* request, uint64_t seq, double& total, MPI_Status* status) {
  const auto entered = CollectiveClock::now();
  const auto record = log_.find(seq);
  const auto start = record ? record->start : entered;
  const auto deadline = start + std::chrono::duration_cast<CollectiveClock::duration>(
                                    std::chrono::duration<double>(timeout_s_));
  // MPI_Test also drives the call's progress; poll_wait.h says how often and why.
  const PollHooks hooks{[&] {
                          int done = 0;
                          HYDRA_MPI_CHECK(MPI_Test(request, &done, status));
                          return done != 0;
                        },
                        [] { return CollectiveClock::now(); }, [] { std::this_thread::yield(); },
                        [](std::chrono::microseconds d) { std::this_thread::sleep_for(d); }};
  if (poll_until_done(hooks, poll_policy_, deadline) == PollEnd::kExpired) timed_out(seq);
  total += std::chrono::duration<double>(CollectiveClock::now() - entered).count();
}

void MpiCommunicator::timed_out(uint64_t seq) {
  CollectiveRecord stuck;
  if (auto r = log_.find(seq)) stuck = *r;
  const GroupIdentity me{name_, world_ranks_, rank_, world_rank_};
  stop_run_on_timeout(
      format_timeout_report(stuck, me, timeout_s_, log_.recent(), CollectiveClock::now()),
      TimeoutExit::kMpiAbort);
}

void MpiCommunicator::finish_reduction(at::Tensor& buffer, at::Tensor& result, ReduceOp op) const {
  if (op == ReduceOp::kAvg) buffer.div_(size_);
  if (!buffer.is_same(result)) result.copy_(buffer);  // bf16: one rounding, at the end
}

void MpiCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_buffer(tensor, "all_reduce", "tensor");
  const uint64_t seq = log_.begin("all_reduce", nbytes(tensor));
  at::Tensor buffer = reduction_buffer(tensor);
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer.data_ptr(),
                                 as_count(buffer.numel(), "all_reduce"),
                                 transfer_type(buffer.scalar_type()), mpi_op(op), comm_, &request));
  wait(&request, seq, waited_.collective_s);
  finish_reduction(buffer, tensor, op);
  log_.end(seq);
}

void MpiCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  check_buffer(input, "reduce_scatter", "input");
  check_buffer(output, "reduce_scatter", "output");
  if (input.scalar_type() != output.scalar_type()) {
    HYDRA_FAIL(RuntimeFailure, "reduce_scatter on '" << name_ << "': input is "
                                                     << input.scalar_type() << " but output is "
                                                     << output.scalar_type());
  }
  const int64_t numel = input.numel();
  const Range mine = shard_range(numel, size_, rank_);
  if (output.numel() != mine.size()) {
    HYDRA_FAIL(RuntimeFailure, "reduce_scatter on '" << name_ << "': output has " << output.numel()
                                                     << " elements, expected " << mine.size()
                                                     << " (part " << rank_ << " of " << numel
                                                     << " split " << size_ << " ways)");
  }
  std::vector<int> counts(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r)
    counts[static_cast<size_t>(r)] =
        as_count(shard_range(numel, size_, r).size(), "reduce_scatter");

  const uint64_t seq = log_.begin("reduce_scatter", nbytes(input));
  const at::Tensor send = reduction_buffer(input);
  // A fresh fp32 buffer for bf16; for fp32/fp64 the output itself. It never aliases the
  // input storage unless the caller passed overlapping tensors, which MPI forbids.
  at::Tensor receive = output.scalar_type() == at::kBFloat16
                           ? at::empty({output.numel()}, output.options().dtype(at::kFloat))
                           : output;
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Ireduce_scatter(send.data_ptr(), receive.data_ptr(), counts.data(),
                                      transfer_type(send.scalar_type()), mpi_op(op), comm_,
                                      &request));
  wait(&request, seq, waited_.collective_s);
  finish_reduction(receive, output, op);
  log_.end(seq);
}

void MpiCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  check_buffer(input, "all_gather", "input");
  check_buffer(output, "all_gather", "output");
  if (input.scalar_type() != output.scalar_type()) {
    HYDRA_FAIL(RuntimeFailure, "all_gather on '" << name_ << "': input is " << input.scalar_type()
                                                 << " but output is " << output.scalar_type());
  }
  const int64_t numel = output.numel();
  const Range mine = shard_range(numel, size_, rank_);
  if (input.numel() != mine.size()) {
    HYDRA_FAIL(RuntimeFailure, "all_gather on '" << name_ << "': input has " << input.numel()
                                                 << " elements, expected " << mine.size()
                                                 << " (part " << rank_ << " of " << numel
                                                 << " split " << size_ << " ways)");
  }
  std::vector<int> counts(static_cast<size_t>(size_));
  std::vector<int> displs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    const Range part = shard_range(numel, size_, r);
    counts[static_cast<size_t>(r)] = as_count(part.size(), "all_gather");
    displs[static_cast<size_t>(r)] = as_count(part.begin, "all_gather");
  }
  const uint64_t seq = log_.begin("all_gather", nbytes(input));
  const MPI_Datatype type = transfer_type(input.scalar_type());
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Iallgatherv(input.data_ptr(), counts[static_cast<size_t>(rank_)], type,
                                  output.data_ptr(), counts.data(), displs.data(), type, comm_,
                                  &request));
  wait(&request, seq, waited_.collective_s);
  log_.end(seq);
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_buffer(tensor, "broadcast", "tensor");
  check_peer(root, "broadcast", "root");
  const uint64_t seq = log_.begin("broadcast", nbytes(tensor));
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), as_count(tensor.numel(), "broadcast"),
                             transfer_type(tensor.scalar_type()), root, comm_, &request));
  wait(&request, seq, waited_.collective_s);
  log_.end(seq);
}

void MpiCommunicator::send(const at::Tensor& tensor, int peer) {
  check_buffer(tensor, "send", "tensor");
  check_peer(peer, "send", "peer");
  const uint64_t seq = log_.begin("send", nbytes(tensor));
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Isend(tensor.data_ptr(), as_count(tensor.numel(), "send"),
                            transfer_type(tensor.scalar_type()), peer, kP2pTag, comm_, &request));
  wait(&request, seq, waited_.send_s);
  log_.end(seq);
}

void MpiCommunicator::recv(at::Tensor& tensor, int peer) {
  check_buffer(tensor, "recv", "tensor");
  check_peer(peer, "recv", "peer");
  const uint64_t seq = log_.begin("recv", nbytes(tensor));
  const MPI_Datatype type = transfer_type(tensor.scalar_type());
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Irecv(tensor.data_ptr(), as_count(tensor.numel(), "recv"), type, peer,
                            kP2pTag, comm_, &request));
  MPI_Status status;
  wait(&request, seq, waited_.recv_s, &status);
  check_received(status, tensor, peer, "recv");
  log_.end(seq);
}

void MpiCommunicator::check_received(const MPI_Status& status, const at::Tensor& tensor, int peer, const char* op) const {
  int received = 0;
  HYDRA_MPI_CHECK(MPI_Get_count(&status, transfer_type(tensor.scalar_type()), &received));
  if (received != tensor.numel()) {
    HYDRA_FAIL(RuntimeFailure, op << " on '" << name_ << "' from rank " << peer << ": got " << received
                                  << " elements, expected " << tensor.numel() << " (send and recv sizes must match)");
  }
}

void MpiCommunicator::exchange(const at::Tensor& out, int send_peer, at::Tensor& in, int recv_peer) {
  check_buffer(out, "exchange", "out");
  check_buffer(in, "exchange", "in");
  check_peer(send_peer, "exchange", "send_peer");
  check_peer(recv_peer, "exchange", "recv_peer");
  const uint64_t seq = log_.begin("exchange", nbytes(out) + nbytes(in));
  MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  HYDRA_MPI_CHECK(MPI_Irecv(in.data_ptr(), as_count(in.numel(), "exchange"), transfer_type(in.scalar_type()), recv_peer,
                            kP2pTag, comm_, &requests[0]));
  HYDRA_MPI_CHECK(MPI_Isend(out.data_ptr(), as_count(out.numel(), "exchange"), transfer_type(out.scalar_type()),
                            send_peer, kP2pTag, comm_, &requests[1]));
  MPI_Status status;
  wait(&requests[0], seq, waited_.recv_s, &status);
  wait(&requests[1], seq, waited_.send_s);
  check_received(status, in, recv_peer, "exchange");
  log_.end(seq);
}

void MpiCommunicator::barrier() {
  const uint64_t seq = log_.begin("barrier", 0);
  MPI_Request request = MPI_REQUEST_NULL;
  HYDRA_MPI_CHECK(MPI_Ibarrier(comm_, &request));
  wait(&request, seq, waited_.collective_s);
  log_.end(seq);
}

void check_group_list(MPI_Comm parent, const std::vector<int>& ranks, const std::string& name,
                      double timeout_s) {
  int parent_size = 0;
  int parent_rank = 0;
  HYDRA_MPI_CHECK(MPI_Comm_size(parent, &parent_size));
  HYDRA_MPI_CHECK(MPI_Comm_rank(parent, &parent_rank));
  if (!(timeout_s > 0)) {
    HYDRA_FAIL(RuntimeFailure,
               "communicator '" << name << "': timeout " << timeout_s << " s must be > 0");
  }
  if (ranks.empty()) HYDRA_FAIL(RuntimeFailure, "communicator '" << name << "': empty rank list");
  const std::set<int> unique(ranks.begin(), ranks.end());
  if (unique.size() != ranks.size() || *unique.begin() < 0 || *unique.rbegin() >= parent_size) {
    HYDRA_FAIL(RuntimeFailure, "communicator '" << name
                                                << "': rank list must hold distinct ranks in [0, "
                                                << parent_size << ")");
  }
  if (!unique.count(parent_rank)) {
    HYDRA_FAIL(RuntimeFailure, "communicator '" << name << "': rank " << parent_rank
                                                << " is not in the group it is creating");
  }
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent,
                                                    const std::vector<int>& world_ranks,
                                                    std::string name, double timeout_s) {
  check_group_list(parent, world_ranks, name, timeout_s);
  MPI_Group parent_group = MPI_GROUP_NULL;
  MPI_Group group = MPI_GROUP_NULL;
  HYDRA_MPI_CHECK(MPI_Comm_group(parent, &parent_group));
  const int incl_rc = MPI_Group_incl(parent_group, static_cast<int>(world_ranks.size()),
                                     world_ranks.data(), &group);
  HYDRA_MPI_CHECK(MPI_Group_free(&parent_group));
  HYDRA_MPI_CHECK(incl_rc);
  MPI_Comm comm = MPI_COMM_NULL;
  // Collective over `group` only: ranks outside it are not involved, so no rank waits on
  // groups it is not part of.
  const int create_rc = MPI_Comm_create_group(parent, group, creation_tag(name), &comm);
  HYDRA_MPI_CHECK(MPI_Group_free(&group));
  HYDRA_MPI_CHECK(create_rc);
  // Errors come back as codes (HYDRA_MPI_CHECK) whatever the parent's handler is.
  const int handler_rc = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  if (handler_rc != MPI_SUCCESS) {
    MPI_Comm_free(&comm);
    HYDRA_MPI_CHECK(handler_rc);
  }
  return std::make_unique<MpiCommunicator>(comm, world_ranks, std::move(name), timeout_s);
}

}  // namespace hydra::parallel
