// What a training step reads from the host, in device buffers that live as long as the run:
// this rank's micro-batches of the step and the learning rate. Every step copies into the
// same buffers (without waiting for the device), so that a captured step (train/step_graph.h)
// finds its inputs where the capture read them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "data/loader.h"

namespace hydra::train {

struct StepInputs {
  std::vector<data::Batch> micro_batches;  // int64 [micro_batch, seq_len] each, on the run's device
  at::Tensor lr;                           // fp64 0-dim on the run's device: the schedule's value
};

StepInputs make_step_inputs(int micro_batches, int64_t micro_batch, int64_t seq_len, const at::Device& device);

// Fills `inputs` for one step: micro-batch i from `host[i]` (data::copy_batch) and the rate.
void stage_step_inputs(StepInputs& inputs, const std::vector<data::Batch>& host, double lr);

}  // namespace hydra::train
