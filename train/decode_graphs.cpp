#include "train/decode_graphs.h"

#include <string>

namespace hydra::train {

at::Tensor DecodeGraphs::step(model::DecodeBatch& batch, const std::vector<int64_t>& tokens,
                              const std::vector<bool>& active) {
  const int64_t span = batch.prepare(tokens, active);
  if (!capture_) return batch.run(span);
  std::unique_ptr<StepGraph>& graph = graphs_[span];
  if (!graph) graph = std::make_unique<StepGraph>(1, "the decode step over " + std::to_string(span) + " cache slots");
  return graph->run([&] { return batch.run(span); }).clone();
}

int DecodeGraphs::captured() const {
  int n = 0;
  for (const auto& [span, graph] : graphs_) n += graph->captured() ? 1 : 0;
  return n;
}

}  // namespace hydra::train
