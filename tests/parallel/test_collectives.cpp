// Every collective on every group (world, tp, dp, pp) of a ParallelContext, against answers
// computed locally in float64.
//
// Each rank's input is a closed-form function of its world rank and the element index, so any
// rank can compute what every other rank contributed and hence the exact expected result.
// The values are multiples of 0.5 in [-11, 11.5]: exact in bf16, and every sum over 8 ranks
// and every average over a power-of-two group is exact too, so all dtypes compare exactly
// (a small tolerance remains for groups of other sizes).
//
// Usage: test_collectives [--dp N] [--tp N] [--pp N] [--backend mpi|nccl] [--timeout S]
//        under mpirun with dp*tp*pp ranks (dp 0 or absent: inferred). gtest flags pass through.
// Only rank 0 prints gtest output; other ranks print their failures; the process exits
// non-zero on every rank if any rank failed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/errors.h"
#include "parallel/communicator.h"
#include "parallel/mpi_session.h"
#include "parallel/parallel_context.h"
#include "parallel/process_grid.h"
#include "tests/parallel/mpi_test_main.h"

namespace hydra::parallel {
namespace {

// The context under test, built by main() before RUN_ALL_TESTS (test binary only).
ParallelContext* g_ctx = nullptr;
at::Device g_device = at::kCPU;

// 7 and 1003 do not divide by the group sizes used (2, 4, 8); 1 leaves some parts empty.
const std::vector<int64_t> kSizes = {1, 7, 1000, 1003};
const std::vector<ReduceOp> kOps = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax};

double input_value(int world_rank, int64_t index) {
  return static_cast<double>((world_rank * 5 + index * 3) % 23) - 11.0 +
         0.5 * static_cast<double>((world_rank + index) % 2);
}

// Elements [offset, offset + n) of `world_rank`'s input, as `dtype` on the test device.
at::Tensor make_input(int world_rank, int64_t n, int64_t offset, at::ScalarType dtype) {
  at::Tensor t = at::empty({n}, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = input_value(world_rank, offset + i);
  return t.to(dtype).to(g_device);
}

std::vector<double> to_host(const at::Tensor& t) {
  const at::Tensor h = t.to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
}

// What `world_rank` contributed, as the dtype would hold it, in float64.
std::vector<double> contribution(int world_rank, int64_t n, int64_t offset, at::ScalarType dtype) {
  at::Tensor t = at::empty({n}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) t.data_ptr<double>()[i] = input_value(world_rank, offset + i);
  return to_host(t.to(dtype));
}

std::vector<double> reduce_expected(const Communicator& c, int64_t n, ReduceOp op,
                                    at::ScalarType dtype) {
  std::vector<double> out;
  for (size_t g = 0; g < c.world_ranks().size(); ++g) {
    const std::vector<double> v = contribution(c.world_ranks()[g], n, 0, dtype);
    if (g == 0) {
      out = v;
      continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      double& o = out[static_cast<size_t>(i)];
      o = op == ReduceOp::kMax ? std::max(o, v[static_cast<size_t>(i)])
                               : o + v[static_cast<size_t>(i)];
    }
  }
  if (op == ReduceOp::kAvg) {
    for (double& o : out) o /= static_cast<double>(c.size());
  }
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  at::ScalarType dtype, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double rtol = dtype == at::kBFloat16 ? 1.0 / 128 : dtype == at::kFloat ? 1e-6 : 1e-12;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::abs(got[i] - want[i]) > rtol * (1.0 + std::abs(want[i]))) {
      if (++bad <= 3)
        ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

Communicator& group(const std::string& name) {
  if (name == "tp") return *g_ctx->tp;
  if (name == "dp") return *g_ctx->dp;
  if (name == "pp") return *g_ctx->pp;
  return *g_ctx->world;
}

using Param = std::tuple<std::string, at::ScalarType>;

class Collectives : public ::testing::TestWithParam<Param> {
 protected:
  Communicator& comm() { return group(std::get<0>(GetParam())); }
  at::ScalarType dtype() const { return std::get<1>(GetParam()); }
  int me() const { return g_ctx->grid.rank; }
  std::string label(const char* op, int64_t n, const char* extra = "") {
    return std::string(op) + " n=" + std::to_string(n) + " " + extra + " on " + comm().name() +
           " (" + std::to_string(comm().size()) + " ranks)";
  }
};

TEST_P(Collectives, AllReduce) {
  for (ReduceOp op : kOps) {
    for (int64_t n : kSizes) {
      at::Tensor t = make_input(me(), n, 0, dtype());
      comm().all_reduce(t, op);
      expect_close(to_host(t), reduce_expected(comm(), n, op, dtype()), dtype(),
                   label("all_reduce", n, reduce_op_name(op)));
    }
  }
}

// call_totals (hydra bench step's calls_per_step): every call counted with this rank's payload,
// also past the 32 records the timeout report keeps.
TEST_P(Collectives, CallTotalsCountEveryCallAndItsPayload) {
  const CallTotals before = comm().call_totals();
  const int64_t element = at::elementSize(dtype());
  int64_t bytes = 0;
  for (int i = 0; i < 40; ++i) {
    at::Tensor t = make_input(me(), 3 + i, 0, dtype());
    comm().all_reduce(t, ReduceOp::kSum);
    bytes += (3 + i) * element;
  }
  at::Tensor b = make_input(me(), 17, 0, dtype());
  comm().broadcast(b, 0);
  comm().barrier();
  const CallTotals after = comm().call_totals();
  EXPECT_EQ(after.calls - before.calls, 42) << comm().name();
  EXPECT_EQ(after.bytes - before.bytes, bytes + 17 * element) << comm().name();
}

TEST_P(Collectives, ReduceScatterUneven) {
  for (ReduceOp op : kOps) {
    for (int64_t n : kSizes) {
      const Range part = shard_range(n, comm().size(), comm().rank());
      at::Tensor input = make_input(me(), n, 0, dtype());
      at::Tensor output = at::empty({part.size()}, input.options());
      comm().reduce_scatter(input, output, op);
      const std::vector<double> full = reduce_expected(comm(), n, op, dtype());
      const std::vector<double> want(full.begin() + part.begin, full.begin() + part.end);
      expect_close(to_host(output), want, dtype(), label("reduce_scatter", n, reduce_op_name(op)));
      expect_close(to_host(input), contribution(me(), n, 0, dtype()), dtype(),
                   label("reduce_scatter input kept", n));
    }
  }
}

TEST_P(Collectives, AllGatherUneven) {
  for (int64_t n : kSizes) {
    const Range part = shard_range(n, comm().size(), comm().rank());
    at::Tensor input = make_input(me(), part.size(), part.begin, dtype());
    at::Tensor output = at::empty({n}, input.options());
    comm().all_gather(input, output);
    std::vector<double> want;
    for (int g = 0; g < comm().size(); ++g) {
      const Range p = shard_range(n, comm().size(), g);
      const std::vector<double> v =
          contribution(comm().world_ranks()[static_cast<size_t>(g)], p.size(), p.begin, dtype());
      want.insert(want.end(), v.begin(), v.end());
    }
    expect_close(to_host(output), want, dtype(), label("all_gather", n));
  }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm().size(); ++root) {
    for (int64_t n : {int64_t{1}, int64_t{1003}}) {
      at::Tensor t = make_input(me(), n, 0, dtype());
      comm().broadcast(t, root);
      const int root_world = comm().world_ranks()[static_cast<size_t>(root)];
      expect_close(to_host(t), contribution(root_world, n, 0, dtype()), dtype(),
                   label("broadcast", n, ("root " + std::to_string(root)).c_str()));
    }
  }
}

TEST_P(Collectives, SendRecvAroundTheRing) {
  const int size = comm().size();
  if (size == 1) GTEST_SKIP() << "a ring of one rank has no peer";
  const int next = (comm().rank() + 1) % size;
  const int prev = (comm().rank() + size - 1) % size;
  for (int64_t n : {int64_t{1}, int64_t{1003}, int64_t{100000}}) {
    at::Tensor out = make_input(me(), n, 0, dtype());
    at::Tensor in = at::empty({n}, out.options());
    // Even ranks send first, odd ranks receive first: no cycle of waiting senders.
    if (comm().rank() % 2 == 0) {
      comm().send(out, next);
      comm().recv(in, prev);
    } else {
      comm().recv(in, prev);
      comm().send(out, next);
    }
    const int prev_world = comm().world_ranks()[static_cast<size_t>(prev)];
    expect_close(to_host(in), contribution(prev_world, n, 0, dtype()), dtype(),
                 label("recv from prev", n));
  }
}

// Every rank sends to the next and receives from the previous at once: with blocking sends
// of large messages this cycle would wait forever; exchange posts both before waiting. One
// rank exchanges with itself.
TEST_P(Collectives, ExchangeAroundTheRingAllAtOnce) {
  const int size = comm().size();
  const int next = (comm().rank() + 1) % size;
  const int prev = (comm().rank() + size - 1) % size;
  for (int64_t n : {int64_t{1}, int64_t{1003}, int64_t{1} << 20}) {
    const at::Tensor out = make_input(me(), n, 0, dtype());
    at::Tensor in = at::empty({n}, out.options());
    comm().exchange(out, next, in, prev);
    const int prev_world = comm().world_ranks()[static_cast<size_t>(prev)];
    expect_close(to_host(in), contribution(prev_world, n, 0, dtype()), dtype(), label("exchange from prev", n));
  }
}

TEST_P(Collectives, Barrier) {
  for (int i = 0; i < 3; ++i) comm().barrier();
  SUCCEED();
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const at::ScalarType t = std::get<1>(info.param);
  return std::get<0>(info.param) + "_" +
         (t == at::kFloat    ? "fp32"
          : t == at::kDouble ? "fp64"
                             : "bf16");
}

INSTANTIATE_TEST_SUITE_P(AllGroups, Collectives,
                         ::testing::Combine(::testing::Values("world", "tp", "dp", "pp"),
                                            ::testing::Values(at::kFloat, at::kDouble,
                                                              at::kBFloat16)),
                         param_name);

// Bad arguments are refused on the calling rank before anything is sent (so every rank
// throws alike and the collective sequences stay aligned).
TEST(CollectiveArguments, AreValidated) {
  Communicator& c = *g_ctx->world;
  const auto opts = at::TensorOptions().device(g_device);
  at::Tensor strided = at::zeros({8, 2}, opts).t();
  EXPECT_THROW(c.all_reduce(strided, ReduceOp::kSum), common::RuntimeFailure);
  at::Tensor ints = at::zeros({4}, opts.dtype(at::kInt));
  EXPECT_THROW(c.all_reduce(ints, ReduceOp::kSum), common::RuntimeFailure);
  at::Tensor input = at::zeros({10}, opts);
  at::Tensor wrong = at::zeros({shard_range(10, c.size(), c.rank()).size() + 1}, opts);
  EXPECT_THROW(c.reduce_scatter(input, wrong, ReduceOp::kSum), common::RuntimeFailure);
  EXPECT_THROW(c.all_gather(wrong, input), common::RuntimeFailure);
  EXPECT_THROW(c.broadcast(input, c.size()), common::RuntimeFailure);
  EXPECT_THROW(c.send(input, -1), common::RuntimeFailure);
  if (g_device.is_cuda()) {  // the NCCL backend refuses host tensors
    at::Tensor host = at::zeros({4}, at::kFloat);
    EXPECT_THROW(c.all_reduce(host, ReduceOp::kSum), common::RuntimeFailure);
  }
  try {
    c.all_reduce(ints, ReduceOp::kSum);
  } catch (const common::RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce on 'world'"), std::string::npos) << e.what();
  }
}

TEST(ShardRange, SplitsWithTheFirstPartsLonger) {
  EXPECT_EQ(shard_range(7, 3, 0).begin, 0);
  EXPECT_EQ(shard_range(7, 3, 0).size(), 3);
  EXPECT_EQ(shard_range(7, 3, 1).begin, 3);
  EXPECT_EQ(shard_range(7, 3, 2).begin, 5);
  EXPECT_EQ(shard_range(7, 3, 2).end, 7);
  EXPECT_EQ(shard_range(1, 4, 3).size(), 0);
  EXPECT_EQ(shard_range(0, 2, 1).size(), 0);
}

struct Options {
  int dp = 0, tp = 1, pp = 1;
  std::string backend = "mpi";
  double timeout_s = 60;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--dp" && has_value)
      o.dp = std::atoi(argv[++i]);
    else if (arg == "--tp" && has_value)
      o.tp = std::atoi(argv[++i]);
    else if (arg == "--pp" && has_value)
      o.pp = std::atoi(argv[++i]);
    else if (arg == "--backend" && has_value)
      o.backend = argv[++i];
    else if (arg == "--timeout" && has_value)
      o.timeout_s = std::atof(argv[++i]);
    else
      HYDRA_FAIL(common::ConfigError, "test_collectives: unknown argument '" << arg << "'");
  }
  return o;
}

hydra::test::MpiTestSetup configure(int argc, char** argv, const LaunchInfo& launch) {
  const Options opt = parse_options(argc, argv);
  if (opt.backend == "nccl") {
    HYDRA_CHECK(at::hasCUDA(), "--backend nccl needs CUDA");
    g_device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  const GridShape shape = resolve_grid_shape(launch.world, opt.dp, opt.tp, opt.pp);
  if (launch.rank == 0) {
    std::printf("test_collectives: %d ranks, dp %d tp %d pp %d, backend %s\n", launch.world, shape.dp, shape.tp,
                shape.pp, opt.backend.c_str());
  }
  return {shape, opt.backend, opt.timeout_s};
}

}  // namespace
}  // namespace hydra::parallel

int main(int argc, char** argv) {
  return hydra::test::mpi_test_main(argc, argv, "test_collectives", hydra::parallel::configure, hydra::parallel::g_ctx);
}
