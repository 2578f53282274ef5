// Gradient reduction during backward (parallel/grad_overlap.h, through the data-parallel
// optimizer of parallel/data_parallel_optimizer.h) on one process, with a stand-in
// data-parallel group of two ranks whose other rank holds the same gradient. Its collectives
// are tensor operations on the calling thread's current stream, so on a GPU they race with
// backward exactly where NCCL would: if the side stream did not wait for the gathered bucket,
// or the compute stream for the side stream, the reduced gradient would hold stale values.
// Reference: the same model and micro-batches reduced after backward (no overlap), bitwise.
// On a GPU (CUDA build, label gpu) it also checks that the collectives started during
// backward ran on the side stream; on the CPU it checks the hook and ordering logic only.
#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"
#include "parallel/data_parallel_optimizer.h"

namespace hydra::parallel {
namespace {

// Rank 0 of two ranks that hold equal tensors: the average of both is the tensor itself.
class MirroredPair : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }
  void all_reduce(at::Tensor& t, ReduceOp) override {
    note(t);
    t.copy_(t * 0.5 + t * 0.5);  // reads and writes the buffer on the current stream
  }
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp) override {
    note(input);
    const Range mine = shard_range(input.numel(), 2, 0);
    output.copy_(input.narrow(0, mine.begin, mine.size()) * 0.5 + input.narrow(0, mine.begin, mine.size()) * 0.5);
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    const Range mine = shard_range(output.numel(), 2, 0);
    output.zero_();
    output.narrow(0, mine.begin, mine.size()).copy_(input);
  }
  void broadcast(at::Tensor&, int) override { HYDRA_FAIL(common::RuntimeFailure, "not used"); }
  void send(const at::Tensor&, int) override { HYDRA_FAIL(common::RuntimeFailure, "not used"); }
  void recv(at::Tensor&, int) override { HYDRA_FAIL(common::RuntimeFailure, "not used"); }
  void exchange(const at::Tensor&, int, at::Tensor&, int) override { HYDRA_FAIL(common::RuntimeFailure, "not used"); }
  void barrier() override {}
  std::optional<HostWait> host_wait() const override { return std::nullopt; }
  CallTotals call_totals() const override { return {}; }
  bool capturable() const override { return false; }

  std::vector<c10::Stream> streams;  // the current stream at each reducing call

 protected:
  std::string device_refusal(const at::Device&) const override { return ""; }  // any device

 private:
  void note(const at::Tensor& t) { streams.push_back(c10::impl::VirtualGuardImpl(t.device().type()).getStream(t.device())); }
  std::string name_ = "dp";
  std::vector<int> ranks_ = {0, 1};
};

c10::Device test_device() { return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU); }

// A stack of wide layers: backward keeps the GPU busy long after the host has enqueued it.
struct Stack : torch::nn::Module {
  NamedParams params;
  explicit Stack(int width, int depth) {
    torch::manual_seed(3);
    for (int i = 0; i < depth; ++i) {
      torch::nn::Linear layer = register_module("l" + std::to_string(i), torch::nn::Linear(width, width));
      layer->to(test_device());
      layers.push_back(layer);
    }
    for (const auto& p : named_parameters()) params.emplace_back(p.key(), p.value());
  }
  void backward(const at::Tensor& x) {
    at::Tensor h = x;
    for (auto& l : layers) h = torch::tanh(l->forward(h));
    (h * h).mean().backward();
  }
  std::vector<torch::nn::Linear> layers;
};

DataParallelOptions options(int stage, int64_t bucket, bool overlap) {
  DataParallelOptions o;
  o.zero_stage = stage;
  o.bucket_numel = bucket;
  o.overlap = overlap;
  return o;
}

class GradOverlapOneProcess : public ::testing::TestWithParam<int> {};

TEST_P(GradOverlapOneProcess, SameReducedGradientAsAfterBackward) {
  const int stage = GetParam();
  const bool gpu = test_device().is_cuda();
  const int width = gpu ? 1536 : 48, depth = 8, micro = 2;
  Stack overlapped(width, depth), plain(width, depth);
  MirroredPair dp_a, dp_b;
  const FlatLayout layout = make_flat_layout(overlapped.params);
  // About one bucket per layer (a weight plus the next bias), issued from the last layer down.
  const int64_t bucket = int64_t{width} * width + width;
  DataParallelOptimizer a(overlapped, layout, &dp_a, options(stage, bucket, true));
  DataParallelOptimizer b(plain, layout, &dp_b, options(stage, bucket, false));
  const size_t buckets = a.shards().buckets.size();
  ASSERT_GE(buckets, 4u);
  const auto opts = at::TensorOptions().device(test_device());
  for (int step = 0; step < 3; ++step) {
    for (Stack* s : {&overlapped, &plain}) {
      for (auto& item : s->params) item.second.mutable_grad() = at::Tensor();
    }
    std::vector<at::Tensor> xs;
    for (int m = 0; m < micro; ++m) xs.push_back(at::randn({64, width}, opts));
    dp_a.streams.clear();
    for (int m = 0; m < micro; ++m) {
      if (m == micro - 1) a.arm_overlap();
      overlapped.backward(xs[m]);
    }
    a.reduce_gradients();
    for (int m = 0; m < micro; ++m) plain.backward(xs[m]);
    b.reduce_gradients();
    // Before the comparison reads them: the reduced gradients are ready on the compute stream.
    EXPECT_TRUE(at::equal(a.shards().grad_shard, b.shards().grad_shard)) << "stage " << stage << " step " << step;
    // The first step learns how often each accumulator fires and reduces after backward.
    EXPECT_EQ(a.overlap_stats().issued_during_backward, step == 0 ? 0 : static_cast<int>(buckets)) << "step " << step;
    // Every bucket, then the one-element agreement on late gradients (on the compute stream).
    ASSERT_EQ(dp_a.streams.size(), buckets + 1);
    EXPECT_EQ(a.overlap_stats().redone, 0);
    if (gpu) {
      const c10::Stream compute = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(test_device());
      for (size_t i = 0; i < buckets; ++i) EXPECT_NE(dp_a.streams[i], compute) << "bucket collective on the compute stream";
      EXPECT_EQ(dp_a.streams.back(), compute);
      for (const c10::Stream& s : dp_b.streams) EXPECT_EQ(s, compute);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ZeroStages, GradOverlapOneProcess, ::testing::Values(0, 1, 2),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

}  // namespace
}  // namespace hydra::parallel
