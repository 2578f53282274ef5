#include "parallel/tp_slice.h"

#include <mpi.h>

#include <numeric>
#include <vector>

#include "common/errors.h"
#include "parallel/mpi_session.h"

namespace hydra::parallel {
namespace {

class TpSliceCommunicator final : public Communicator {
 public:
  explicit TpSliceCommunicator(int size) : ranks_(static_cast<size_t>(size)) {
    std::iota(ranks_.begin(), ranks_.end(), 0);
  }
  int rank() const override { return 0; }
  int size() const override { return static_cast<int>(ranks_.size()); }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }

  void all_reduce(at::Tensor& tensor, ReduceOp) override { count(tensor, "all_reduce", "tensor"); }
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp) override {
    count(input, "reduce_scatter", "input");
    const Range mine = shard_range(input.numel(), size(), 0);
    output.view(-1).copy_(input.view(-1).narrow(0, mine.begin, mine.size()));
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    count(input, "all_gather", "input");
    at::Tensor flat = output.view(-1);
    for (int part = 0; part < size(); ++part) {
      const Range r = shard_range(flat.numel(), size(), part);
      flat.narrow(0, r.begin, r.size()).copy_(input.view(-1).narrow(0, 0, r.size()));
    }
  }
  void broadcast(at::Tensor& tensor, int root) override {
    check_peer(root, "broadcast", "root");
    count(tensor, "broadcast", "tensor");
  }
  void send(const at::Tensor&, int) override { no_peers("send"); }
  void recv(at::Tensor&, int) override { no_peers("recv"); }
  void exchange(const at::Tensor&, int, at::Tensor&, int) override { no_peers("exchange"); }
  void barrier() override { ++totals_.calls; }
  std::optional<HostWait> host_wait() const override { return HostWait{}; }
  CallTotals call_totals() const override { return totals_; }
  bool capturable() const override { return true; }  // device copies at most, nothing on the host

 protected:
  std::string device_refusal(const at::Device&) const override { return ""; }

 private:
  void count(const at::Tensor& t, const char* op, const char* what) {
    check_tensor(t, op, what);
    totals_.calls += 1;
    totals_.bytes += static_cast<int64_t>(t.numel() * t.element_size());
  }
  [[noreturn]] void no_peers(const char* op) const {
    HYDRA_FAIL(common::RuntimeFailure, op << " on '" << name_ << "': a tp-slice timing run has no peers");
  }
  std::string name_ = "tp";
  std::vector<int> ranks_;
  CallTotals totals_;
};

}  // namespace

std::unique_ptr<Communicator> make_tp_slice_communicator(int size) {
  HYDRA_CHECK(size >= 1, "tp slice of " << size << " ranks");
  return std::make_unique<TpSliceCommunicator>(size);
}

std::unique_ptr<ParallelContext> make_tp_slice_context(int tp, const std::string& backend, double timeout_s) {
  // (The launcher refuses both with a message for the user first: launcher/cmd_bench.cpp.)
  HYDRA_CHECK(query_launch_info(MPI_COMM_WORLD).world == 1, "a tp-slice context is one process");
  HYDRA_CHECK(tp >= 2, "a tp slice of " << tp << " ranks");
  auto ctx = make_parallel_context(make_process_grid(GridShape{1, 1, 1}, 0), backend, timeout_s);
  ctx->grid = make_process_grid(GridShape{1, tp, 1}, 0);
  ctx->tp = make_tp_slice_communicator(tp);
  return ctx;
}

}  // namespace hydra::parallel
