#include "train/step_inputs.h"

#include <ATen/ATen.h>

#include "common/errors.h"

namespace hydra::train {

StepInputs make_step_inputs(int micro_batches, int64_t micro_batch, int64_t seq_len, const at::Device& device) {
  StepInputs in;
  const auto ids = at::TensorOptions().dtype(at::kLong).device(device);
  for (int i = 0; i < micro_batches; ++i) {
    in.micro_batches.push_back({at::zeros({micro_batch, seq_len}, ids), at::zeros({micro_batch, seq_len}, ids)});
  }
  in.lr = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  return in;
}

void stage_step_inputs(StepInputs& inputs, const std::vector<data::Batch>& host, double lr) {
  HYDRA_CHECK(host.size() == inputs.micro_batches.size(),
              "stage_step_inputs: " << host.size() << " micro-batches for " << inputs.micro_batches.size() << " buffers");
  for (size_t i = 0; i < host.size(); ++i) data::copy_batch(host[i], inputs.micro_batches[i]);
  inputs.lr.fill_(lr);
}

}  // namespace hydra::train
