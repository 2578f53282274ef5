// hydra generate's decode steps replayed from CUDA graphs (train/decode_graphs.h, label gpu)
// against the same steps run eagerly: rows at different lengths, some paused, across three
// spans (a graph each), MoD and MoR routing by masks inside the graphs; and a row loaded again
// between replays (the context restart), which the graphs must see.
#include <ATen/Context.h>

#include "model/decode_batch.h"
#include "tests/model/decode_test_util.h"
#include "train/decode_graphs.h"

namespace hydra::train {
namespace {

using namespace model::test;  // the decoding helpers (decode_test_util.h)

TEST(DecodeGraphsGpu, ReplaysEqualEagerSteps) {
  at::globalContext().setAllowTF32CuBLAS(false);
  const torch::Device cuda(torch::kCUDA);
  const Shape s{model::ModelConfig{}.pattern, /*mod=*/true, /*recursions=*/2, "head_dim", 128, "fused"};
  model::HydraModel m = random_model(s, torch::kFloat, cuda);
  constexpr int64_t kLength = 200;
  torch::manual_seed(4);
  const torch::Tensor tokens = torch::randint(kVocab, {3, kLength}, torch::kLong);
  model::DecodeBatch eager(*m, 3, kLength), graphed(*m, 3, kLength);
  const auto load = [&](int64_t row, int64_t from, int64_t n) {
    const model::Decoded d = model::prefill(*m, tokens[row].narrow(0, from, n).to(cuda), kLength);
    eager.load(row, d.state);
    graphed.load(row, d.state);
  };
  for (int64_t row = 0; row < 3; ++row) load(row, 0, 1 + 5 * row);
  DecodeGraphs plain(false), graphs(true);
  double worst = 0;
  for (int step = 0; step < 180; ++step) {
    if (step == 100) load(0, 50, 30);  // a restart between replays
    std::vector<int64_t> next(3, 0);
    std::vector<bool> active(3, false);
    for (int64_t row = 0; row < 3; ++row) {
      const int64_t t = eager.length(row);
      if (t >= kLength || (row == 1 && step % 7 == 3)) continue;
      active[row] = true;
      next[row] = tokens[row][t].item<int64_t>();
    }
    const torch::Tensor want = plain.step(eager, next, active), got = graphs.step(graphed, next, active);
    for (int64_t row = 0; row < 3; ++row) {
      if (!active[row]) continue;
      const torch::Tensor w = want[row].narrow(0, 0, kVocab), g = got[row].narrow(0, 0, kVocab);
      worst = std::max(worst, (g - w).abs().max().item<double>() / std::max(1.0, w.abs().max().item<double>()));
    }
  }
  std::printf("graphs captured %d, largest relative difference %.2e\n", graphs.captured(), worst);
  EXPECT_LT(worst, 1e-5);
  EXPECT_GE(graphs.captured(), 3);  // spans 64, 128, 192
  EXPECT_EQ(eager.cache_entries(), graphed.cache_entries());
}

}  // namespace
}  // namespace hydra::train
