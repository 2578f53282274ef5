// The short training runs of `hydra diagnose` (diagnose_runs.h).
#include "train/diagnose_runs.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>

#include "common/errors.h"
#include "train/device_memory.h"

namespace hydra::train {

data::Batch DiagnoseData::batch(int64_t step, int64_t rows, int64_t seq_len) const {
  if (train) return train->samples(step * rows, rows);
  const int64_t span = seq_len + 1;
  const int64_t windows = static_cast<int64_t>(bytes.size()) / span;
  at::Tensor all = at::empty({rows, span}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t w = (step * rows + r) % windows;
    std::copy_n(bytes.begin() + w * span, span, all[r].data_ptr<int64_t>());
  }
  return {all.narrow(1, 0, seq_len).contiguous(), all.narrow(1, 1, seq_len).contiguous()};
}

DiagnoseData open_diagnose_data(const RunConfig& config) {
  DiagnoseData d;
  if (!config.data.path.empty()) {
    d.train = data::open_data_source(config.data, config.train.seq_len, config.train.seed).train;
    d.source = config.data.path;
    return d;
  }
  const std::string sample = "/usr/share/common-licenses/GPL-3";
  std::ifstream in(sample, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (static_cast<int64_t>(text.size()) < config.train.seq_len + 1 || config.model.vocab_size < 256) {
    HYDRA_FAIL(common::ConfigError, "hydra diagnose: data.path is not set and the built-in sample "
                                        << sample << " is missing, shorter than train.seq_len, or the vocabulary is "
                                        << "below 256 byte values; set data.path (hydra data prepare)");
  }
  for (unsigned char ch : text) d.bytes.push_back(ch);
  d.source = sample + " (bytes as token ids)";
  return d;
}

ShortRun short_run(const RunConfig& rc, const model::ModelConfig& mc, const DiagnoseData& data, int steps,
                   const std::function<void(int, model::HydraModelImpl&)>& after_backward) {
  const bool cuda = rc.train.device == "cuda";
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::manual_seed(rc.train.seed);
  const model::HydraModel m = std::make_shared<model::HydraModelImpl>(mc);
  m->to(device, rc.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat);
  m->train();
  torch::optim::AdamW optimizer(m->parameters(), torch::optim::AdamWOptions(rc.train.lr)
                                                     .betas({rc.train.beta1, rc.train.beta2})
                                                     .eps(rc.train.eps)
                                                     .weight_decay(rc.train.weight_decay));
  ShortRun run;
  for (const auto& p : m->parameters()) run.params += p.numel();
  reset_allocator_peaks(cuda);
  std::vector<double> times;
  model::ForwardOptions options;
  options.router_entropy = true;
  for (int step = 0; step < steps; ++step) {
    const data::Batch b = data::to_device(data.batch(step, rc.train.global_batch, rc.train.seq_len), device);
    const auto t0 = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    const model::ModelOutput out = m->forward(b.inputs, b.targets, options);
    out.loss().backward();
    if (after_backward) after_backward(step, *m);
    if (rc.train.clip > 0) torch::nn::utils::clip_grad_norm_(m->parameters(), rc.train.clip);
    optimizer.step();
    run.loss.push_back(out.lm_loss.item<double>());  // reads the device: the step has ended
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    for (const model::RoutingStat& stat : out.routing) {
      auto it = std::find_if(run.routers.begin(), run.routers.end(), [&](const RouterUse& u) { return u.name == stat.name; });
      if (it == run.routers.end()) it = run.routers.insert(run.routers.end(), RouterUse{stat.name});
      it->selected += stat.selected;
      it->candidates += stat.candidates;
      if (stat.entropy_sum.defined()) it->entropy += stat.entropy_sum.item<double>();  // a sum, divided below
    }
  }
  for (RouterUse& u : run.routers) u.entropy /= static_cast<double>(std::max<int64_t>(1, u.candidates));
  std::sort(times.begin(), times.end());
  run.ms_per_step = times.empty() ? 0.0 : times[times.size() / 2];
  run.peak_gb = allocator_peaks(cuda).allocated_bytes / 1e9;
  return run;
}

}  // namespace hydra::train
