// `hydra diagnose`'s gradients section: a short real training run, the gradient norm of every
// parameter at every step, and the flags of train/diagnose.h.
#include <torch/types.h>

#include <algorithm>
#include <cmath>

#include "model/hydra_model.h"
#include "train/diagnose.h"
#include "train/diagnose_runs.h"

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

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

void run_gradients(const RunConfig& rc, const DiagnoseOptions& o, const DiagnoseData& data, DiagnoseReport& report) {
  GradientReport& g = report.gradients;
  g.steps = o.steps;
  g.data = data.source;
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  std::vector<std::vector<double>> norms;
  const ShortRun run = short_run(rc, rc.model, data, o.steps, [&](int step, model::HydraModelImpl& m) {
    const auto named = m.named_parameters();
    if (names.empty()) {
      for (const auto& item : named) {
        names.push_back(item.key());
        sizes.push_back(item.value().numel());
      }
      norms.resize(names.size());
    }
    size_t i = 0;
    for (const auto& item : named) {
      const at::Tensor& grad = item.value().grad();
      norms[i++].push_back(grad.defined() ? grad.to(torch::kDouble).norm().item<double>() : 0.0);
    }
    if (o.progress) o.progress("gradients: step " + std::to_string(step + 1) + "/" + std::to_string(o.steps));
  });
  g.loss = run.loss;
  std::vector<double> rms;
  for (size_t i = 0; i < names.size(); ++i) {
    ParamGradient p;
    p.name = names[i];
    p.numel = sizes[i];
    classify(rc.model, p.name, p.type, p.component);
    const std::vector<double>& v = norms[i];
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
