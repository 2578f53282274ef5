// `hydra diagnose`'s gradients section: a short real training run, the gradient norm of every
// parameter at every step, and the flags of train/diagnose.h.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>

#include "common/errors.h"
#include "data/loader.h"
#include "model/hydra_model.h"
#include "train/diagnose.h"

namespace hydra::train {
namespace {

// "blocks.1.layers.3.attn.wq.weight" -> layer 3's attention type and "attn.wq.weight"; other
// parameters keep their name and the type "model".
void classify(const model::ModelConfig& c, const std::string& name, std::string& type, std::string& component) {
  const std::string key = ".layers.";
  const size_t at = name.find(key);
  if (name.rfind("blocks.", 0) != 0 || at == std::string::npos) {
    type = "model";
    component = name;
    return;
  }
  const size_t number_end = name.find('.', at + key.size());
  const int position = std::stoi(name.substr(at + key.size(), number_end - at - key.size()));
  type = c.pattern.at(static_cast<size_t>(position));
  component = name.substr(number_end + 1);
}

// Token windows of seq_len + 1 for `rows` sequences a step: the configured training data from
// its start, or the bytes of a text every Debian has (the byte values are token ids below 256).
struct Windows {
  std::shared_ptr<const data::TrainData> train;
  std::vector<int64_t> bytes;
  std::string source;

  data::Batch batch(int64_t step, int64_t rows, int64_t seq_len) const {
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
};

Windows open_windows(const RunConfig& config) {
  Windows w;
  if (!config.data.path.empty()) {
    w.train = data::open_data_source(config.data, config.train.seq_len, config.train.seed).train;
    w.source = config.data.path;
    return w;
  }
  const std::string sample = "/usr/share/common-licenses/GPL-3";
  std::ifstream in(sample, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (static_cast<int64_t>(text.size()) < config.train.seq_len + 1 || config.model.vocab_size < 256) {
    HYDRA_FAIL(common::ConfigError, "hydra diagnose --sections gradients: data.path is not set and the built-in sample "
                                        << sample << " is missing, shorter than train.seq_len, or the vocabulary is "
                                        << "below 256 byte values; set data.path (hydra data prepare)");
  }
  for (unsigned char ch : text) w.bytes.push_back(ch);
  w.source = sample + " (bytes as token ids)";
  return w;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

void run_gradients(const RunConfig& rc, const DiagnoseOptions& o, DiagnoseReport& report) {
  const Windows windows = open_windows(rc);
  const bool cuda = rc.train.device == "cuda";
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::manual_seed(rc.train.seed);
  const model::HydraModel m = std::make_shared<model::HydraModelImpl>(rc.model);
  m->to(device, rc.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat);
  m->train();
  torch::optim::AdamW optimizer(m->parameters(), torch::optim::AdamWOptions(rc.train.lr)
                                                     .betas({rc.train.beta1, rc.train.beta2})
                                                     .eps(rc.train.eps)
                                                     .weight_decay(rc.train.weight_decay));
  GradientReport& g = report.gradients;
  g.steps = o.steps;
  g.data = windows.source;
  const auto named = m->named_parameters();
  std::vector<std::vector<double>> norms(named.size());
  for (int step = 0; step < o.steps; ++step) {
    const data::Batch b = data::to_device(windows.batch(step, rc.train.global_batch, rc.train.seq_len), device);
    optimizer.zero_grad();
    const model::ModelOutput out = m->forward(b.inputs, b.targets);
    out.loss().backward();
    size_t i = 0;
    for (const auto& item : named) {
      const at::Tensor& grad = item.value().grad();
      norms[i++].push_back(grad.defined() ? grad.to(torch::kDouble).norm().item<double>() : 0.0);
    }
    if (rc.train.clip > 0) torch::nn::utils::clip_grad_norm_(m->parameters(), rc.train.clip);
    optimizer.step();
    g.loss.push_back(out.lm_loss.item<double>());
    if (o.progress) {
      o.progress("gradients: step " + std::to_string(step + 1) + "/" + std::to_string(o.steps) + ", loss " +
                 std::to_string(g.loss.back()));
    }
  }
  size_t i = 0;
  std::vector<double> rms;
  for (const auto& item : named) {
    ParamGradient p;
    p.name = item.key();
    p.numel = item.value().numel();
    classify(rc.model, p.name, p.type, p.component);
    const std::vector<double>& v = norms[i++];
    p.first = v.front();
    p.last = v.back();
    p.min = *std::min_element(v.begin(), v.end());
    p.max = *std::max_element(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    p.mean = sum / static_cast<double>(v.size());
    const double per_element = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, p.numel)));
    p.mean_rms = p.mean * per_element;
    p.max_rms = p.max * per_element;
    rms.push_back(p.mean_rms);
    g.params.push_back(p);
  }
  g.median_rms = median_of(rms);
  for (ParamGradient& p : g.params) {
    if (!std::isfinite(p.max)) {
      p.flag = "non-finite";
    } else if (p.mean_rms > kExplodingFactor * g.median_rms) {
      p.flag = "exploding";
    } else if (p.max_rms < kVanishingFactor * g.median_rms) {
      p.flag = "vanishing";
    }
  }
}

}  // namespace hydra::train
