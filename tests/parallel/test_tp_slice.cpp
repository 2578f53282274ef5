// parallel/tp_slice.h: the communicator of a one-process tp-slice timing run moves nothing, writes
// what a rank of the group would find in its outputs' shapes, and counts its calls as a real
// group's communicator does (hydra bench step reports them; check_plan.py compares them with a
// real tp2 rank's).
#include <gtest/gtest.h>
#include <torch/types.h>

#include "common/errors.h"
#include "parallel/tp_slice.h"

namespace {

using namespace hydra::parallel;

TEST(TpSlice, CollectivesMoveNothingAndAreCounted) {
  auto comm = make_tp_slice_communicator(3);
  EXPECT_EQ(comm->size(), 3);
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->world_ranks(), (std::vector<int>{0, 1, 2}));
  at::Tensor x = torch::arange(7, torch::kFloat32);
  const at::Tensor before = x.clone();
  comm->all_reduce(x, ReduceOp::kSum);  // rank 0's partial sum stands for the total
  EXPECT_TRUE(torch::equal(x, before));
  comm->broadcast(x, 2);
  EXPECT_TRUE(torch::equal(x, before));
  // 7 elements in 3 parts: 3, 2, 2. This rank's part is the first.
  at::Tensor part = torch::empty({3}, torch::kFloat32);
  comm->reduce_scatter(x, part, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(part, before.narrow(0, 0, 3)));
  at::Tensor whole = torch::full({7}, -1.0f);
  comm->all_gather(part, whole);  // every part written (from this rank's, as long as it is)
  EXPECT_TRUE(torch::equal(whole, torch::tensor({0.f, 1.f, 2.f, 0.f, 1.f, 0.f, 1.f})));
  const CallTotals t = comm->call_totals();
  EXPECT_EQ(t.calls, 4);
  EXPECT_EQ(t.bytes, (7 + 7 + 7 + 3) * 4);
  EXPECT_EQ(comm->host_wait()->collective_s, 0.0);
}

TEST(TpSlice, RefusesWhatNoRealGroupWouldTake) {
  auto comm = make_tp_slice_communicator(2);
  at::Tensor x = torch::zeros({4}, torch::kFloat32);
  EXPECT_THROW(comm->send(x, 1), hydra::common::RuntimeFailure);  // a tp group has no point-to-point
  EXPECT_THROW(comm->broadcast(x, 2), hydra::common::RuntimeFailure);  // no rank 2
  at::Tensor ints = torch::zeros({4}, torch::kInt64);
  EXPECT_THROW(comm->all_reduce(ints, ReduceOp::kSum), hydra::common::RuntimeFailure);  // as the real ones
  at::Tensor strided = torch::zeros({4, 2}, torch::kFloat32).t();
  EXPECT_THROW(comm->all_reduce(strided, ReduceOp::kSum), hydra::common::RuntimeFailure);
  EXPECT_EQ(comm->call_totals().calls, 0);
}

}  // namespace
