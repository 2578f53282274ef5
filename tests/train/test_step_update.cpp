// The training step after backward (train/step_update.h) reads nothing on the host: an
// observer of every ATen call (RecordFunction) counts the calls that bring a device value to
// the host (item(), _local_scalar_dense, is_nonzero) while the step is queued, and finds
// none; the numbers are read only when the loop asks (train/step_numbers.h). A step that went
// back to deciding on the host (the norm's or the loss's item(), an `if` on a tensor) fails
// here. Also: the numbers read late are the step's, a non-finite loss leaves the weights
// bitwise as they were, and gathering the gradients into the flat buffer costs the same
// number of launches for 4 parameters as for 40 (it printed the step's launch count for the
// record). Runs on 1 rank and, with ZeRO 1/2 over MPI, on 2.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <atomic>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "parallel/data_parallel_optimizer.h"
#include "parallel/flat_layout.h"
#include "parallel/parallel_context.h"
#include "parallel/process_grid.h"
#include "tests/parallel/mpi_test_main.h"
#include "train/step_numbers.h"
#include "train/step_update.h"

namespace hydra::train {
namespace {

parallel::ParallelContext* g_ctx = nullptr;

std::atomic<int> g_host_reads{0};

// A RecordFunction start callback (a plain function: LibTorch 1.13 takes a function pointer).
std::unique_ptr<at::ObserverContext> count_host_read(const at::RecordFunction& fn) {
  const std::string name = fn.name();
  if (name == "aten::item" || name == "aten::_local_scalar_dense" || name == "aten::is_nonzero") ++g_host_reads;
  return nullptr;
}

// Counts host reads on this thread while it lives.
class HostReadCounter {
 public:
  HostReadCounter() : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(count_host_read))) {
    g_host_reads = 0;
  }
  ~HostReadCounter() { at::removeCallback(handle_); }
  int reads() const { return g_host_reads.load(); }

 private:
  at::CallbackHandle handle_;
};

// Top-level ATen calls on this thread that may launch a kernel, while it lives: views,
// detach and allocations (no kernel) are left out, and so are the calls a counted call makes
// itself (a composite op's parts). `to` counts even where it converts nothing: an upper bound.
std::atomic<int> g_depth{0};
std::atomic<int> g_launches{0};

bool launches_nothing(const std::string& name) {
  for (const char* op : {"aten::narrow", "aten::view", "aten::reshape", "aten::detach", "aten::select", "aten::slice",
                         "aten::as_strided", "aten::alias", "aten::expand", "aten::squeeze", "aten::unsqueeze",
                         "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::result_type"}) {
    if (name == op) return true;
  }
  return false;
}

std::unique_ptr<at::ObserverContext> enter_call(const at::RecordFunction& fn) {
  if (g_depth++ == 0 && !launches_nothing(fn.name())) ++g_launches;
  return nullptr;
}
void leave_call(const at::RecordFunction&, at::ObserverContext*) { --g_depth; }

class LaunchCounter {
 public:
  LaunchCounter() : handle_(at::addThreadLocalCallback(at::RecordFunctionCallback(enter_call, leave_call))) {
    g_depth = 0;
    g_launches = 0;
  }
  ~LaunchCounter() { at::removeCallback(handle_); }
  int launches() const { return g_launches.load(); }

 private:
  at::CallbackHandle handle_;
};

// `count` parameters of 7 elements each.
struct ManyParams : torch::nn::Module {
  explicit ManyParams(int count) {
    for (int i = 0; i < count; ++i) register_parameter("p" + std::to_string(i), at::randn({7}));
  }
};

struct TwoLayers : torch::nn::Module {
  TwoLayers() {
    at::manual_seed(1);
    w = register_parameter("w", at::randn({6, 5}));
    b = register_parameter("b", at::randn({5}));
  }
  at::Tensor w, b;
};

parallel::DataParallelOptimizer make_optimizer(TwoLayers& model, int stage) {
  parallel::NamedParams params;
  for (const auto& item : model.named_parameters()) params.emplace_back(item.key(), item.value());
  parallel::DataParallelOptions options;
  options.zero_stage = stage;
  options.bucket_numel = 16;  // several buckets, cutting parameters' ranks apart
  options.overlap = false;
  return parallel::DataParallelOptimizer(model, parallel::make_flat_layout(params), g_ctx->dp.get(), options);
}

// The same gradient on every rank: d/dw and d/db of sum((x w + b)^2) for a fixed x.
void backward(TwoLayers& model) {
  for (auto& p : model.parameters()) p.mutable_grad() = at::Tensor();
  at::manual_seed(2);
  const at::Tensor x = at::randn({3, 6});
  (at::matmul(x, model.w) + model.b).pow(2).sum().backward();
}

double expected_norm(const TwoLayers& model) {
  return std::sqrt(model.w.grad().to(at::kDouble).pow(2).sum().item<double>() +
                   model.b.grad().to(at::kDouble).pow(2).sum().item<double>());
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

TEST(HostReadCounter, SeesAnItem) {  // the instrument works, so a zero below means something
  const HostReadCounter counter;
  (void)at::ones({1}).sum().item<double>();
  EXPECT_GE(counter.reads(), 1);
}

TEST(StepUpdate, QueuesTheStepWithoutReadingTheDeviceAndReportsItLate) {
  for (int stage : {0, 1, 2}) {
    TwoLayers model;
    parallel::DataParallelOptimizer optim = make_optimizer(model, stage);
    const parallel::AdamWHyper hyper{at::scalar_tensor(1e-2, at::kDouble), 0.9, 0.95, 1e-8, 0.1};
    PendingSteps pending;
    std::vector<double> norms;
    std::vector<at::Tensor> before;
    for (int step = 1; step <= 3; ++step) {
      backward(model);
      norms.push_back(expected_norm(model));
      before.push_back(model.w.detach().clone());
      optim.reduce_gradients();
      const double loss = step == 2 ? std::numeric_limits<double>::quiet_NaN() : 2.5;
      const at::Tensor loss_sum = at::tensor({loss, 0.25}, at::kDouble);
      const HostReadCounter counter;
      pending.push(step, update_step(optim, *g_ctx, loss_sum, hyper, /*clip=*/1.0));
      EXPECT_EQ(counter.reads(), 0) << "stage " << stage << " step " << step << ": the step read the device on the host";
    }
    EXPECT_EQ(pending.size(), 3u);
    int settled = 0;
    pending.settle(1, [&](int64_t step, const StepNumbers& n) {
      ++settled;
      EXPECT_EQ(step, settled);
      EXPECT_EQ(n.applied, step != 2) << "step " << step;
      if (step != 2) EXPECT_EQ(n.loss, 2.5);
      EXPECT_EQ(n.aux, 0.25);
      EXPECT_NEAR(n.grad_norm, norms[step - 1], 1e-5 * norms[step - 1]) << "step " << step;
    });
    EXPECT_EQ(settled, 2);  // the newest stays pending
    EXPECT_EQ(pending.size(), 1u);
    // before[k]: the weights before step k + 1. Step 2's non-finite loss left them as step 1
    // made them; steps 1 and 3 moved them.
    EXPECT_TRUE(same_bits(before[2], before[1])) << "stage " << stage;
    EXPECT_FALSE(same_bits(before[1], before[0])) << "stage " << stage;
    EXPECT_FALSE(same_bits(model.w, before[2])) << "stage " << stage;
    pending.settle(0, [&](int64_t step, const StepNumbers& n) {
      EXPECT_EQ(step, 3);
      EXPECT_TRUE(n.applied);
    });
    EXPECT_EQ(pending.size(), 0u);
  }
}

// The gradients reach the flat buffer in one batched copy, whatever the parameter count
// (parallel/flat_layout.cpp); before, one copy per parameter. One process, one bucket.
TEST(StepUpdate, GatheringTheGradientsDoesNotGrowWithTheParameterCount) {
  if (g_ctx->dp->size() > 1) GTEST_SKIP() << "one process: the buckets' collectives would count too";
  std::vector<int> launches;
  for (int count : {4, 40}) {
    ManyParams model(count);
    parallel::NamedParams params;
    for (const auto& item : model.named_parameters()) params.emplace_back(item.key(), item.value());
    parallel::DataParallelOptions options;
    options.overlap = false;
    parallel::DataParallelOptimizer optim(model, parallel::make_flat_layout(params), g_ctx->dp.get(), options);
    for (auto& p : model.parameters()) p.mutable_grad() = at::ones_like(p);
    {
      const LaunchCounter gather;
      optim.reduce_gradients();
      launches.push_back(gather.launches());
    }
    const at::Tensor loss_sum = at::tensor({1.0, 0.0}, at::kDouble);
    const LaunchCounter update;  // (one counter at a time: they share the count)
    (void)update_step(optim, *g_ctx, loss_sum, parallel::AdamWHyper{at::scalar_tensor(3e-4, at::kDouble)}, 1.0);
    // For the record, in the test's log: the launches a step costs after backward.
    std::printf("%d parameters, one bucket: reduce_gradients %d launches, update_step %d\n", count,
                launches.back(), update.launches());
  }
  EXPECT_EQ(launches[0], launches[1]);
}

}  // namespace
}  // namespace hydra::train

int main(int argc, char** argv) {
  return hydra::test::mpi_test_main(
      argc, argv, "test_step_update",
      [](int, char**, const hydra::parallel::LaunchInfo& launch) {
        return hydra::test::MpiTestSetup{hydra::parallel::resolve_grid_shape(launch.world, launch.world, 1, 1)};
      },
      hydra::train::g_ctx);
}
