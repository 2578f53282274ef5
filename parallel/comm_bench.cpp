#include "parallel/comm_bench.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>

#include "common/errors.h"

namespace hydra::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// Waits until the work queued so far is done: MPI calls return done; for NCCL, which queued
// the collective on the current stream, a one-element `probe` on the same device is touched
// after it and copied to the host, which waits for that stream (a rank's shard may be empty,
// so the results themselves cannot serve).
void wait_for(at::Tensor& probe) { (void)probe.add_(1).cpu(); }

// One collective on one group, its buffers filled: `call` runs it once, `check` says what is
// wrong with the result of the first call ("" when right).
struct Collective {
  std::function<void()> call;
  std::function<std::string()> check;
};

std::string mismatch(const at::Tensor& got_device, const at::Tensor& want_device) {
  const at::Tensor got = got_device.cpu(), want = want_device.cpu();
  if (at::equal(got, want)) return "";
  const int64_t at_index = (got - want).abs().argmax().item<int64_t>();
  char buf[160];
  std::snprintf(buf, sizeof buf, "element %lld is %g, expected %g", static_cast<long long>(at_index),
                got[at_index].item<double>(), want[at_index].item<double>());
  return buf;
}

constexpr const char* kOps[] = {"all_reduce", "reduce_scatter", "all_gather", "p2p"};

// Collective `op` (one of kOps) on `comm` for `numel` float32 elements: each rank contributes
// rank + 1 (its rank in the group), so every result is known exactly. One at a time, so that
// only one collective's buffers exist at the largest size.
Collective make_collective(const std::string& op, Communicator& comm, int64_t numel, const at::TensorOptions& o) {
  const int n = comm.size(), r = comm.rank();
  const double mine = r + 1, total = n * (n + 1) / 2.0;
  const Range part = shard_range(numel, n, r);
  if (op == "all_reduce") {
    at::Tensor buf = at::full({numel}, mine, o);
    return {[&comm, buf]() mutable { comm.all_reduce(buf, ReduceOp::kSum); },
            [buf, total] { return mismatch(buf, at::full_like(buf, total)); }};
  }
  if (op == "reduce_scatter") {
    const at::Tensor in = at::full({numel}, mine, o);
    at::Tensor shard = at::empty({part.size()}, o);
    return {[&comm, in, shard]() mutable { comm.reduce_scatter(in, shard, ReduceOp::kSum); },
            [shard, total] { return mismatch(shard, at::full_like(shard, total)); }};
  }
  if (op == "all_gather") {
    const at::Tensor shard = at::full({part.size()}, mine, o);
    at::Tensor full = at::empty({numel}, o);
    at::Tensor want = at::empty({numel}, o);
    for (int i = 0; i < n; ++i) {
      const Range p = shard_range(numel, n, i);
      want.narrow(0, p.begin, p.size()).fill_(i + 1);
    }
    return {[&comm, shard, full]() mutable { comm.all_gather(shard, full); },
            [full, want] { return mismatch(full, want); }};
  }
  HYDRA_CHECK(op == "p2p", "bench comm: unknown collective '" << op << "'");
  // Ring-wise: every rank sends to the next and receives from the previous at once.
  const at::Tensor send = at::full({numel}, mine, o);
  at::Tensor recv = at::empty({numel}, o);
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  return {[&comm, send, recv, next, prev]() mutable { comm.exchange(send, next, recv, prev); },
          [recv, prev] { return mismatch(recv, at::full_like(recv, prev + 1.0)); }};
}

std::string size_text(int64_t bytes) {
  char buf[32];
  if (bytes >= (int64_t{1} << 30) && bytes % (int64_t{1} << 30) == 0) {
    std::snprintf(buf, sizeof buf, "%lld GiB", static_cast<long long>(bytes >> 30));
  } else if (bytes >= (int64_t{1} << 20) && bytes % (int64_t{1} << 20) == 0) {
    std::snprintf(buf, sizeof buf, "%lld MiB", static_cast<long long>(bytes >> 20));
  } else if (bytes >= 1024 && bytes % 1024 == 0) {
    std::snprintf(buf, sizeof buf, "%lld KiB", static_cast<long long>(bytes >> 10));
  } else {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  }
  return buf;
}

}  // namespace

double bus_factor(const std::string& op, int ranks) {
  const double n = ranks;
  if (op == "all_reduce") return 2.0 * (n - 1) / n;
  if (op == "reduce_scatter" || op == "all_gather") return (n - 1) / n;
  if (op == "p2p") return 1.0;
  HYDRA_FAIL(common::RuntimeFailure, "bench comm: unknown collective '" << op << "'");
}

std::vector<CommBenchRow> run_comm_bench(ParallelContext& ctx, const CommBenchPlan& plan) {
  HYDRA_CHECK(plan.repeats >= 1, "bench comm: repeats " << plan.repeats);
  const int world = ctx.world->size();
  std::vector<Communicator*> groups = {ctx.world.get()};
  for (Communicator* g : {ctx.tp.get(), ctx.dp.get(), ctx.pp.get()}) {
    if (g->size() > 1 && g->size() < world) groups.push_back(g);
  }
  const auto o = at::TensorOptions().device(plan.device).dtype(at::kFloat);
  at::Tensor probe = at::zeros({1}, o);
  std::vector<CommBenchRow> rows;
  for (Communicator* comm : groups) {
    if (comm->size() < 2) continue;  // one process: nothing to measure
    for (const int64_t bytes : plan.sizes) {
      HYDRA_CHECK(bytes > 0 && bytes % 4 == 0, "bench comm: size " << bytes << " bytes is not a whole number of floats");
      for (const std::string op : kOps) {
        const std::string where = comm->name() + " " + op + " " + size_text(bytes);
        const Collective c = make_collective(op, *comm, bytes / 4, o);
        c.call();
        wait_for(probe);
        const std::string wrong = c.check();
        if (!wrong.empty()) HYDRA_FAIL(common::RuntimeFailure, "bench comm: " << where << " on rank " << comm->rank() << ": " << wrong);
        comm->barrier();
        const auto t0 = Clock::now();
        for (int i = 0; i < plan.repeats; ++i) c.call();
        wait_for(probe);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / plan.repeats;
        // The slowest rank's time, over the world (every group measured at once).
        at::Tensor slowest = at::full({1}, ms, at::TensorOptions().device(plan.device).dtype(at::kDouble));
        ctx.world->all_reduce(slowest, ReduceOp::kMax);
        CommBenchRow row;
        row.group = comm->name();
        row.ranks = comm->size();
        row.op = op;
        row.bytes = bytes;
        row.ms = slowest.cpu().item<double>();
        row.algbw_gbs = static_cast<double>(bytes) / (row.ms * 1e-3) / 1e9;
        row.busbw_gbs = row.algbw_gbs * bus_factor(op, row.ranks);
        rows.push_back(row);
        if (plan.progress) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "%s (%d ranks): %.4f ms, algbw %.2f GB/s, busbw %.2f GB/s", where.c_str(),
                        row.ranks, row.ms, row.algbw_gbs, row.busbw_gbs);
          plan.progress(buf);
        }
      }
    }
  }
  return rows;
}

}  // namespace hydra::parallel
