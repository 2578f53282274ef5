// Data, tensor and pipeline parallelism over NCCL in bf16 against one GPU (CUDA build, labels
// gpu and multigpu: scripts/device-check.sh runs it when the machine has 2 or more GPUs).
// The sandbox model (MQA, CCQA, MLA; MoD and MoR on; 2 macro-blocks, tied embeddings, clipping
// active) trains 5 steps with the same global batch on every layout the GPUs allow; the
// per-step losses agree within bf16 tolerance (3e-2 relative: the layouts sum in other
// orders, in bf16).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/train/train_sandbox.h"

namespace {

using Sets = std::vector<std::string>;

int gpu_count() {
  FILE* pipe = ::popen("nvidia-smi -L 2>/dev/null | wc -l", "r");
  if (!pipe) return 0;
  int n = 0;
  if (std::fscanf(pipe, "%d", &n) != 1) n = 0;
  ::pclose(pipe);
  return n;
}

struct GpuParallelTrain : hydra::test::SandboxTest<GpuParallelTrain> {
  static constexpr const char* kTag = "hydra_gpu_parallel_train";
  static constexpr int kSteps = 5;
};

TEST_F(GpuParallelTrain, LayoutsEqualOneGpuInBf16) {
  const int gpus = gpu_count();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, found " << gpus;
  const Sets base = {"train.device=cuda", "train.dtype=bf16", "model.macro_blocks=2", "model.tie_embeddings=true",
                     "train.clip=0.5"};
  auto with = [&](const Sets& layout) {
    Sets sets = base;
    sets.insert(sets.end(), layout.begin(), layout.end());
    return sets;
  };
  const auto ref = sandbox()->train("ref", 0, base);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto want = sandbox()->loss_and_grad_norm("ref");
  ASSERT_EQ(want.size(), static_cast<size_t>(kSteps));
  EXPECT_LT(want.rbegin()->second.first, want.begin()->second.first) << "the reference does not learn";
  struct Layout {
    std::string name;
    int np;
    Sets sets;
  };
  // Buckets of ~1k elements: many, reduced on the side stream during backward (and, as the
  // baseline, after it).
  const std::string small_buckets = "parallel.bucket_mb=0.004";
  std::vector<Layout> layouts = {{"dp2_zero1", 2, {"parallel.dp=2", "parallel.zero_stage=1", small_buckets}},
                                 {"dp2_zero2", 2, {"parallel.dp=2", "parallel.zero_stage=2", small_buckets}},
                                 {"dp2_zero1_no_overlap", 2,
                                  {"parallel.dp=2", "parallel.zero_stage=1", small_buckets, "parallel.overlap_grad_reduce=false"}},
                                 {"tp2", 2, {"parallel.tp=2"}},
                                 {"pp2", 2, {"parallel.pp=2"}}};
  if (gpus >= 4) {
    layouts.push_back({"tp2_pp2", 4, {"parallel.tp=2", "parallel.pp=2"}});
    layouts.push_back({"pp2_dp2_zero2", 4, {"parallel.pp=2", "parallel.dp=2", "parallel.zero_stage=2",
                                            "train.micro_batch=1", small_buckets}});
  }
  for (const Layout& layout : layouts) {
    const auto run = sandbox()->train(layout.name, layout.np, with(layout.sets));
    ASSERT_EQ(run.exit_code, 0) << layout.name << "\n" << run.output;
    const auto got = sandbox()->loss_and_grad_norm(layout.name);
    ASSERT_EQ(got.size(), want.size()) << layout.name;
    for (const auto& [step, v] : want) {
      EXPECT_NEAR(got.at(step).first, v.first, 3e-2 * std::abs(v.first)) << layout.name << " loss at step " << step;
    }
  }
}

}  // namespace
