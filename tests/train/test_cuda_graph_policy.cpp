// When the training step is captured in a CUDA graph (train.cuda_graphs, train/step_graph.h):
// every reason that rules it out is named, `on` refuses to start naming them all, `off` never
// captures, and a one-process CUDA run without them captures (CUDA build).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "train/step_graph.h"

namespace {

using hydra::train::RunConfig;

hydra::parallel::ProcessGrid grid_of(int dp) {
  hydra::parallel::GridShape shape;
  shape.dp = dp;
  return hydra::parallel::make_process_grid(shape, 0);
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
  c.train.activation_checkpointing = "mlp";  // captured too: not a reason
  const auto why = hydra::train::cuda_graph_blockers(c, grid_of(2).shape);
  EXPECT_EQ(why.size(), 3u);
  EXPECT_TRUE(mentions(why, "train.device is cpu"));
  EXPECT_TRUE(mentions(why, "2 processes"));
  EXPECT_TRUE(mentions(why, "train.inject_nonfinite_step"));
  EXPECT_FALSE(mentions(why, "activation_checkpointing"));

  c.train.cuda_graphs = "on";
  try {
    hydra::train::use_cuda_graphs(c, grid_of(2));
    ADD_FAILURE() << "train.cuda_graphs: on with blockers must refuse";
  } catch (const hydra::common::ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.cuda_graphs: on, but the step cannot be captured"), std::string::npos) << what;
    EXPECT_NE(what.find("2 processes"), std::string::npos) << what;
    EXPECT_NE(what.find("train.inject_nonfinite_step"), std::string::npos) << what;
  }
  c.train.cuda_graphs = "off";
  EXPECT_FALSE(hydra::train::use_cuda_graphs(c, grid_of(2)));
  c.train.cuda_graphs = "auto";
  EXPECT_FALSE(hydra::train::use_cuda_graphs(c, grid_of(2)));
}

TEST(CudaGraphPolicy, OneCudaProcessCaptures) {
  RunConfig c;
  c.train.device = "cuda";
  c.train.activation_checkpointing = "layer";  // the recompute is captured with the step
  const auto why = hydra::train::cuda_graph_blockers(c, grid_of(1).shape);
#ifdef HYDRA_CUDA
  EXPECT_TRUE(why.empty()) << why.front();
  EXPECT_TRUE(hydra::train::use_cuda_graphs(c, grid_of(1)));
#else
  ASSERT_EQ(why.size(), 1u);
  EXPECT_EQ(why[0], "the CPU build has no CUDA");
#endif
}

}  // namespace
