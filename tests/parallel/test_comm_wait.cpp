// The MPI communicator's host-wait accounting (Communicator::host_wait), on 2 ranks: when one
// rank reaches a call `kLate` later than its peer, the peer's recorded wait grows by at least
// that much, in the kind of call it waited in and in no other, while the late rank's own wait
// stays far below it (it found its peer already there). A counter that stayed 0, counted
// every call's whole wall time or credited the wrong kind fails one of these.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"
#include "tests/parallel/mpi_test_main.h"

namespace hydra::parallel {
namespace {

ParallelContext* g_ctx = nullptr;

constexpr double kLate = 0.3;     // seconds one rank arrives after the other
constexpr double kSkew = 0.05;    // how far apart the two ranks may leave the barrier before it

// Runs `call` on both ranks after a barrier, rank `late_rank` kLate s late; the change of this
// rank's totals over the call.
template <typename Call>
HostWait waited_in(Communicator& comm, int late_rank, Call call) {
  comm.barrier();
  const HostWait before = *comm.host_wait();
  if (comm.rank() == late_rank) std::this_thread::sleep_for(std::chrono::duration<double>(kLate));
  call();
  const HostWait after = *comm.host_wait();
  return {after.collective_s - before.collective_s, after.recv_s - before.recv_s, after.send_s - before.send_s};
}

TEST(HostWait, TheEarlyRankWaitsForTheLateOneInACollective) {
  Communicator& world = *g_ctx->world;
  ASSERT_EQ(world.size(), 2);
  at::Tensor t = at::ones({16}, at::kFloat);
  const HostWait d = waited_in(world, 1, [&] { world.all_reduce(t, ReduceOp::kSum); });
  EXPECT_EQ(t[0].item<float>(), 2.0f);
  if (world.rank() == 0) EXPECT_GE(d.collective_s, kLate - kSkew);
  if (world.rank() == 1) EXPECT_LT(d.collective_s, kLate / 2);
  EXPECT_EQ(d.recv_s, 0.0);
  EXPECT_EQ(d.send_s, 0.0);
}

TEST(HostWait, AReceiverWaitsForALateSender) {
  Communicator& world = *g_ctx->world;
  at::Tensor t = at::full({16}, static_cast<float>(world.rank()), at::kFloat);
  const HostWait d = waited_in(world, 1, [&] {
    if (world.rank() == 0) world.recv(t, 1);
    if (world.rank() == 1) world.send(t, 0);
  });
  EXPECT_EQ(t[0].item<float>(), 1.0f);
  if (world.rank() == 0) {
    EXPECT_GE(d.recv_s, kLate - kSkew);
    EXPECT_EQ(d.send_s, 0.0);
  } else {
    EXPECT_LT(d.send_s, kLate / 2);  // a small message: the receive was posted long before
    EXPECT_EQ(d.recv_s, 0.0);
  }
  EXPECT_EQ(d.collective_s, 0.0);
}

TEST(HostWait, AnExchangeWaitsInItsReceive) {
  Communicator& world = *g_ctx->world;
  const at::Tensor out = at::full({16}, static_cast<float>(world.rank()), at::kFloat);
  at::Tensor in = at::empty({16}, at::kFloat);
  const int peer = 1 - world.rank();
  const HostWait d = waited_in(world, 0, [&] { world.exchange(out, peer, in, peer); });
  EXPECT_EQ(in[0].item<float>(), static_cast<float>(peer));
  if (world.rank() == 1) EXPECT_GE(d.recv_s + d.send_s, kLate - kSkew);
  if (world.rank() == 1) EXPECT_GE(d.recv_s, kLate - kSkew);
  if (world.rank() == 0) EXPECT_LT(d.recv_s + d.send_s, kLate / 2);
  EXPECT_EQ(d.collective_s, 0.0);
}

TEST(HostWait, TheContextSumsItsCommunicators) {
  HostWait sum;
  for (const Communicator* c : {g_ctx->world.get(), g_ctx->tp.get(), g_ctx->dp.get(), g_ctx->pp.get()}) {
    sum += *c->host_wait();
  }
  const std::optional<HostWait> all = host_wait(*g_ctx);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->collective_s, sum.collective_s);
  EXPECT_EQ(all->recv_s, sum.recv_s);
  EXPECT_GT(all->collective_s, 0.0);
}

hydra::test::MpiTestSetup configure(int, char**, const LaunchInfo& launch) {
  return {resolve_grid_shape(launch.world, 0, 1, 1), "mpi", 60};
}

}  // namespace
}  // namespace hydra::parallel

int main(int argc, char** argv) {
  return hydra::test::mpi_test_main(argc, argv, "test_comm_wait", hydra::parallel::configure, hydra::parallel::g_ctx);
}
