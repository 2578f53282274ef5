// When the training step is captured in a CUDA graph (train.cuda_graphs, train/step_graph.h):
// every reason that rules it out is named, `on` refuses to start naming them all, `off` never
// captures, and a one-process CUDA run without them captures (CUDA build).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "parallel/tp_slice.h"
#include "train/step_graph.h"

namespace {

using hydra::train::RunConfig;

hydra::parallel::ProcessGrid grid_of(int dp, int tp = 1, int pp = 1) {
  return hydra::parallel::make_process_grid(hydra::parallel::GridShape{dp, tp, pp}, 0);
}

// A context with the grid alone (no communicators: use_cuda_graphs reads the tp group only).
hydra::parallel::ParallelContext context_of(int dp) {
  hydra::parallel::ParallelContext ctx;
  ctx.grid = grid_of(dp);
  return ctx;
}

bool mentions(const std::vector<std::string>& why, const std::string& piece) {
  for (const auto& w : why) {
    if (w.find(piece) != std::string::npos) return true;
  }
  return false;
}

TEST(CudaGraphPolicy, NamesEveryReasonThatRulesTheCaptureOut) {
  RunConfig c;
  c.train.device = "cpu";
  c.train.inject_nonfinite_step = 3;
  c.train.activation_checkpointing = "mlp";  // captured with the step: no reason (2026-12-07)
  const auto why = hydra::train::cuda_graph_blockers(c, grid_of(2).shape);
  EXPECT_EQ(why.size(), 3u);
  EXPECT_TRUE(mentions(why, "train.device is cpu"));
  EXPECT_TRUE(mentions(why, "dp 2: the gradient reduction"));
  EXPECT_TRUE(mentions(why, "train.inject_nonfinite_step"));
  EXPECT_FALSE(mentions(why, "activation_checkpointing"));

  c.train.cuda_graphs = "on";
  try {
    hydra::train::use_cuda_graphs(c, context_of(2));
    ADD_FAILURE() << "train.cuda_graphs: on with blockers must refuse";
  } catch (const hydra::common::ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.cuda_graphs: on, but the step cannot be captured"), std::string::npos) << what;
    EXPECT_NE(what.find("dp 2"), std::string::npos) << what;
    EXPECT_NE(what.find("train.inject_nonfinite_step"), std::string::npos) << what;
  }
  c.train.cuda_graphs = "off";
  EXPECT_FALSE(hydra::train::use_cuda_graphs(c, context_of(2)));
  c.train.cuda_graphs = "auto";
  EXPECT_FALSE(hydra::train::use_cuda_graphs(c, context_of(2)));
}

// Each parallel axis is its own reason; tp is none where its group can be recorded (the
// tp-slice timing run's group, which has no peers).
TEST(CudaGraphPolicy, EachParallelAxisIsNamedAndATpSliceCaptures) {
  RunConfig c;
  c.train.device = "cuda";
  const auto all = hydra::train::cuda_graph_blockers(c, grid_of(2, 2, 2).shape);
  EXPECT_TRUE(mentions(all, "dp 2")) << all.size();
  EXPECT_TRUE(mentions(all, "pp 2: the pipeline"));
  EXPECT_TRUE(mentions(all, "tp 2: its collectives are not captured yet"));
  const auto tp_only = hydra::train::cuda_graph_blockers(c, grid_of(1, 2).shape, /*tp_capturable=*/true);
  EXPECT_FALSE(mentions(tp_only, "tp 2"));
  EXPECT_FALSE(mentions(tp_only, "dp")) << "one dp rank is no reason";

  hydra::parallel::ParallelContext slice;
  slice.grid = grid_of(1, 2);
  slice.tp = hydra::parallel::make_tp_slice_communicator(2);
  EXPECT_TRUE(slice.tp->capturable());
  c.train.cuda_graphs = "on";
#ifdef HYDRA_CUDA
  EXPECT_TRUE(hydra::train::use_cuda_graphs(c, slice));
#else
  EXPECT_THROW(hydra::train::use_cuda_graphs(c, slice), hydra::common::ConfigError);  // (no CUDA)
#endif
}

// With or without recompute: the recompute (a forward and a backward inside the backward) is
// captured with the step and replays bitwise as it runs eagerly (test_cuda_graph_train).
TEST(CudaGraphPolicy, OneCudaProcessCaptures) {
  for (const std::string mode : {"none", "mlp", "layer", "block"}) {
    RunConfig c;
    c.train.device = "cuda";
    c.train.activation_checkpointing = mode;
    const auto why = hydra::train::cuda_graph_blockers(c, grid_of(1).shape);
#ifdef HYDRA_CUDA
    EXPECT_TRUE(why.empty()) << mode << ": " << why.front();
    EXPECT_TRUE(hydra::train::use_cuda_graphs(c, context_of(1))) << mode;
#else
    ASSERT_EQ(why.size(), 1u) << mode;
    EXPECT_EQ(why[0], "the CPU build has no CUDA") << mode;
#endif
  }
}

}  // namespace
