// One interface for collectives over at::Tensor, with two backends:
//   MPI  (mpi_communicator.cpp): CPU tensors; the CI backend.
//   NCCL (nccl_communicator.cpp, CUDA build only): CUDA tensors.
//
// Contract (both backends):
// - Every rank of the group calls the same collectives in the same order (as in MPI and
//   NCCL). Each call gets the next sequence number of this communicator.
// - MPI: calls return when the result is in place. NCCL: calls are enqueued on the current
//   CUDA stream of the tensor's device and return at once; stream order makes the result
//   visible to later work on that stream. Callers on another stream must wait on it.
// - Tensors must be contiguous. fp32, fp64 and bf16 are supported (bf16 sums are computed in
//   fp32 by the MPI backend and rounded once).
// - Uneven sizes: reduce_scatter and all_gather split the flat input into `size()` parts with
//   shard_range() below (the first numel % size parts one element longer).
// - Timeouts: each call that has not completed within the configured timeout stops the run
//   with exit code 4 after logging the collective, the group, its sequence number and this
//   rank's recent collectives (CollectiveLog). There is no hang without a message.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "parallel/collective_log.h"

namespace hydra::parallel {

enum class ReduceOp { kSum, kAvg, kMax };
const char* reduce_op_name(ReduceOp op);

// The [begin, end) element range of part `index` when `numel` elements are split in `parts`.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
Range shard_range(int64_t numel, int parts, int index);

// Host time a rank spent blocked inside this communicator's calls, cumulative since it was
// made: what `hydra bench step` splits a step into (compute, exposed communication, pipeline
// waits). A wait covers the whole call from posting to completion (on the CPU the transfer and
// the reduction happen inside it), not the checks and copies around it.
struct HostWait {
  double collective_s = 0;  // all_reduce, reduce_scatter, all_gather, broadcast, barrier
  double recv_s = 0;        // recv, and the receive half of exchange
  double send_s = 0;        // send, and the send half of exchange (waited for after the receive)
  HostWait& operator+=(const HostWait& o) {
    collective_s += o.collective_s, recv_s += o.recv_s, send_s += o.send_s;
    return *this;
  }
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;              // rank within this group
  virtual int size() const = 0;              // ranks in this group
  virtual const std::string& name() const = 0;  // group name for messages: "tp", "dp", ...
  virtual const std::vector<int>& world_ranks() const = 0;  // group rank -> world rank

  // In place on `tensor`.
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  // input: the full flat buffer (same numel on every rank); output: this rank's part,
  // numel == shard_range(input.numel(), size(), rank()).size().
  virtual void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) = 0;
  // input: this rank's part as above; output: the full buffer.
  virtual void all_gather(const at::Tensor& input, at::Tensor& output) = 0;
  // In place; `root` is a rank within this group.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Point to point; `peer` is a rank within this group. Sizes and dtypes must match.
  virtual void send(const at::Tensor& tensor, int peer) = 0;
  virtual void recv(at::Tensor& tensor, int peer) = 0;
  // Sends `out` to `send_peer` and receives `in` from `recv_peer` as one operation: both are
  // posted before either is waited for, so two ranks that exchange with each other (a
  // pipeline stage sending activations forward while the next sends gradients back) never
  // wait on each other's send. The peers may differ.
  virtual void exchange(const at::Tensor& out, int send_peer, at::Tensor& in, int recv_peer) = 0;
  virtual void barrier() = 0;

  // This rank's waits so far; nullopt where the host does not block on the transfers (NCCL:
  // calls return once enqueued, so its host waits would read as a wrong 0, not a small one).
  virtual std::optional<HostWait> host_wait() const = 0;
  // Every call so far on this communicator (collectives and point-to-point) and its payload.
  // Counted on the host as calls are issued: a replayed CUDA graph issues none.
  virtual CallTotals call_totals() const = 0;
  // Whether its calls may be recorded into a CUDA graph and replayed (train/step_graph.h):
  // they queue device work only and keep no host-side watch on it. MPI: no (the transfers
  // run on the host); NCCL: not yet (its watchdog records an event after every call, and
  // captured collectives have not been run on several GPUs); the tp-slice group: yes.
  virtual bool capturable() const = 0;

 protected:
  // The checks both backends make before a call: a RuntimeFailure naming the call `op`, this
  // group and `what` unless `t` is defined, on a device this backend takes (device_refusal),
  // contiguous, and fp32, fp64 or bf16.
  void check_tensor(const at::Tensor& t, const char* op, const char* what) const;
  // A RuntimeFailure unless `peer` is a rank of this group.
  void check_peer(int peer, const char* op, const char* what) const;
  // Empty when this backend takes tensors on `device`; otherwise why not, for the message.
  virtual std::string device_refusal(const at::Device& device) const = 0;
};

}  // namespace hydra::parallel
