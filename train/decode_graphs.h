// hydra generate's decode steps in CUDA graphs: a batched decode step (model/decode_batch.h)
// issues some thousand small kernels for a few microseconds of work each, so eager decoding on
// a GPU is bound by the host. Its device half reads only the batch's input buffers and caches,
// and its shapes depend only on the span it reads, so one graph per span is captured (at the
// span's second step; the first runs eagerly and allocates what the step needs) and replayed
// for every later step of that span: a 1,024-token context makes at most 16.
//
// Used where train.cuda_graphs is not off, the model is on CUDA and in one process (under
// tensor parallelism the collectives are not captured: the steps run eagerly).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "model/decode_batch.h"
#include "train/step_graph.h"

namespace hydra::train {

class DecodeGraphs {
 public:
  // capture false: every step eager (the CPU, tensor parallelism, train.cuda_graphs off).
  explicit DecodeGraphs(bool capture) : capture_(capture) {}

  // batch.step(tokens, active), the device half replayed from its span's graph once captured.
  // The logits are a copy: they outlive the next replay.
  at::Tensor step(model::DecodeBatch& batch, const std::vector<int64_t>& tokens, const std::vector<bool>& active = {});

  // Graphs captured so far (one per span replayed).
  int captured() const;

 private:
  bool capture_;
  std::map<int64_t, std::unique_ptr<StepGraph>> graphs_;  // by span
};

}  // namespace hydra::train
