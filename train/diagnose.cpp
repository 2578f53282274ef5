#include "train/diagnose.h"

#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <optional>
#include <set>

#include "common/errors.h"
#include "model/activation_memory.h"
#include "model/dims.h"
#include "model/model_checks.h"
#include "model/hydra_model.h"
#include "model/model_info.h"
#include "model/projection.h"
#include "train/device_memory.h"
#include "train/diagnose_runs.h"

namespace hydra::train {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string utc_now() {
  char buf[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  return buf;
}

// The attention types of the pattern, in pattern order, each once.
std::vector<std::string> layer_types(const model::ModelConfig& c) {
  std::vector<std::string> out;
  for (const std::string& t : c.pattern) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  return out;
}

struct Target {
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat;
  bool cuda = false;
  int dtype_bytes = 4;
};

Target target_of(const RunConfig& config) {
  Target t;
  t.cuda = config.train.device == "cuda";
  t.device = t.cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  t.dtype = config.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  t.dtype_bytes = config.train.dtype == "bf16" ? 2 : 4;
  return t;
}

// The median wall time of `repeats` calls of `pass` after one untimed call, the device
// synchronised around each (so a CUDA pass is timed to its end).
double median_ms(const Target& t, int repeats, const std::function<void()>& pass) {
  pass();
  synchronize_device(t.cuda);
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    pass();
    synchronize_device(t.cuda);
    times.push_back(ms_since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// forward(no autograd) and forward+backward of `run` (which returns what backward starts from),
// the parameters' gradients dropped after each pass.
void time_point(const Target& t, int repeats, torch::nn::Module& module, const std::function<torch::Tensor()>& run,
                SpeedPoint& p) {
  const auto drop_grads = [&] {
    for (auto& param : module.parameters()) param.mutable_grad().reset();
  };
  reset_allocator_peaks(t.cuda);
  p.forward_ms = median_ms(t, repeats, [&] {
    torch::NoGradGuard no_grad;
    run();
  });
  p.fwdbwd_ms = median_ms(t, repeats, [&] {
    const torch::Tensor out = run();
    out.backward(torch::ones_like(out));
    drop_grads();
  });
  p.peak_gb = allocator_peaks(t.cuda).allocated_bytes / 1e9;
}

// One layer's point (p.batch x p.seq) on random inputs of width `dim`.
void time_layer(const Target& t, int repeats, model::Layer layer, int64_t dim, SpeedPoint& p) {
  const auto opts = torch::TensorOptions().device(t.device).dtype(t.dtype);
  const torch::Tensor x = torch::randn({p.batch, p.seq, dim}, opts);
  const torch::Tensor pos =
      torch::arange(p.seq, opts.dtype(torch::kLong)).unsqueeze(0).expand({p.batch, p.seq}).contiguous();
  time_point(t, repeats, *layer, [&] { return layer->dense(x, pos); }, p);
}

model::Layer make_layer(const model::ModelConfig& c, const std::string& type, const Target& t) {
  torch::manual_seed(0);
  auto layer = std::make_shared<model::LayerImpl>(c, type, /*mod_routed=*/false, /*aux_scale=*/0.0,
                                                  model::default_projection_factory(), "layer");
  layer->to(t.device, t.dtype);
  return model::Layer(layer);
}

int64_t count_params(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// Prints "[i/n] what ... (elapsed, about ETA left)" for each point.
struct Progress {
  std::function<void(const std::string&)> out;
  int total = 0, done = 0;
  Clock::time_point start = Clock::now();
  void point(const std::string& text) {
    ++done;
    if (!out) return;
    const double elapsed = ms_since(start) / 1e3;
    const double left = done < total ? elapsed / done * (total - done) : 0.0;
    char buf[96];
    std::snprintf(buf, sizeof buf, " (%.0f s, about %.0f s left)", elapsed, left);
    out("[" + std::to_string(done) + "/" + std::to_string(total) + "] " + text + buf);
  }
};

std::string describe(const SpeedPoint& p) {
  char buf[160];
  if (!p.error.empty()) {
    std::snprintf(buf, sizeof buf, "%s B %lld S %lld: skipped (%s)", p.what.c_str(), static_cast<long long>(p.batch),
                  static_cast<long long>(p.seq), p.error.c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%s B %lld S %lld: forward %.3f ms, forward+backward %.3f ms (%.2f TFLOP/s)",
                  p.what.c_str(), static_cast<long long>(p.batch), static_cast<long long>(p.seq), p.forward_ms,
                  p.fwdbwd_ms, 3 * p.forward_flops / (p.fwdbwd_ms * 1e9));
  }
  return buf;
}

// One point, its failure (out of memory, above all) recorded instead of ending the report.
void measure(SpeedPoint& p, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    std::string what = e.what();
    p.error = what.substr(0, what.find('\n'));
  }
}

parallel::GridShape one_rank() {
  parallel::GridShape one;
  one.dp = one.tp = one.pp = 1;
  return one;
}

// hydra info's estimate for one rank at micro-batch B x S, less the optimizer state: what the
// speed grid's model pass (forward and backward, no optimizer step) holds at its peak.
double predicted_pass_gb(const RunConfig& config, int64_t B, int64_t S) {
  RunConfig at = config;
  at.train.global_batch = at.train.micro_batch = static_cast<int>(B);
  at.train.seq_len = static_cast<int>(S);
  const MemoryEstimate e = estimate_memory(at, one_rank());
  const StageMemory& m = e.stages.at(0);
  return static_cast<double>(m.weights + m.activations + m.buffers) / 1e9;
}

void run_speed(const RunConfig& config, const DiagnoseOptions& o, const Target& t, Progress& progress,
               DiagnoseReport& report) {
  const model::ModelConfig& c = config.model;
  for (const std::string& type : layer_types(c)) {
    const model::Layer layer = make_layer(c, type, t);
    for (int64_t B : o.batches) {
      for (int64_t S : o.seqs) {
        SpeedPoint p{type, B, S};
        p.forward_flops = static_cast<double>(B) * model::layer_forward_flops(c, type, S);
        measure(p, [&] { time_layer(t, o.repeats, layer, c.dim, p); });
        report.speed.push_back(p);
        progress.point(describe(p));
      }
    }
  }
  torch::manual_seed(0);
  const model::HydraModel m = std::make_shared<model::HydraModelImpl>(c);
  m->to(t.device, t.dtype);
  for (int64_t B : o.batches) {
    for (int64_t S : o.seqs) {
      SpeedPoint p{"model", B, S};
      // flops_per_token counts forward + backward (3x the forward).
      p.forward_flops = model::compute_model_stats(c, static_cast<int>(S)).flops_per_token * B * S / 3.0;
      p.predicted_gb = predicted_pass_gb(config, B, S);
      measure(p, [&] {
        const torch::Tensor tokens =
            torch::randint(c.vocab_size, {B, S + 1}, torch::TensorOptions().device(t.device).dtype(torch::kLong));
        const torch::Tensor input = tokens.narrow(1, 0, S), targets = tokens.narrow(1, 1, S);
        // As the trainer runs it: the loss from the chunked LM head, no logits for the batch.
        model::ForwardOptions fwd;
        fwd.return_logits = false;
        time_point(t, o.repeats, *m, [&] { return m->forward(input, targets, fwd).loss(); }, p);
      });
      report.speed.push_back(p);
      progress.point(describe(p));
    }
  }
}

void run_memory(const RunConfig& config, const Target& t, DiagnoseReport& report) {
  const model::ModelConfig& c = config.model;
  for (const std::string& type : layer_types(c)) {
    LayerMemory m;
    m.type = type;
    // Counted on a layer built on the CPU: the analytic counts (model_info) are what it checks.
    torch::manual_seed(0);
    const model::LayerImpl layer(c, type, false, 0.0, model::default_projection_factory(), "layer");
    m.params = count_params(layer);
    m.weight_bytes = m.params * t.dtype_bytes;
    m.gradient_bytes = m.params * t.dtype_bytes;
    m.optimizer_bytes = m.params * 13;
    const int position = static_cast<int>(std::find(c.pattern.begin(), c.pattern.end(), type) - c.pattern.begin());
    m.activation_bytes_per_token = model::layer_activation_bytes(c, position, t.dtype_bytes).saved;
    m.kv_bytes_per_token = model::layer_kv_bytes_per_token(c, type);
    report.layers.push_back(m);
  }
  report.estimate = estimate_memory(config, one_rank());
}

// CCQA's C of compression_sweep in the configured layout, then the configured C in the other
// layout (model.ccqa.compress: what C divides): a short run each, and one CCQA layer's forward+backward
// at the grid's largest point (the latency a user trades for the loss). The layout's run is
// there because the choice is about quality as much as speed (docs/QUALITY.md, 2026-12-06).
struct CompressionPoint {
  int C;
  std::string compress;
};

void run_compression(const RunConfig& config, const DiagnoseOptions& o, const Target& t, const DiagnoseData& data,
                     DiagnoseReport& report) {
  CurveSet& set = report.compression;
  const int64_t B = o.batches.back(), S = o.seqs.back();
  const std::string layout = config.model.ccqa.compress, other = layout == "heads" ? "head_dim" : "heads";
  std::vector<CompressionPoint> points;
  for (int C : compression_sweep(config.model)) points.push_back({C, layout});
  points.push_back({config.model.ccqa.compression, other});
  for (const CompressionPoint& point : points) {
    model::ModelConfig v = config.model;
    v.ccqa.compression = point.C;
    v.ccqa.compress = point.compress;
    std::string name = "C " + std::to_string(point.C), change = "model.ccqa.compression=" + std::to_string(point.C);
    if (point.compress != layout) {
      name += ", compress " + point.compress;
      change = "model.ccqa.compress=" + point.compress;
    }
    RunCurve curve;
    try {
      model::check_model_config(v);
      curve = curve_of(name, change, v, short_run(config, v, data, o.steps));
      SpeedPoint p{"ccqa", B, S};
      measure(p, [&] { time_layer(t, o.repeats, make_layer(v, "ccqa", t), v.dim, p); });
      curve.ccqa_layer_ms = p.error.empty() ? p.fwdbwd_ms : 0.0;
    } catch (const common::ConfigError& e) {
      curve.name = name;
      curve.change = change;
      curve.error = e.what();
    }
    set.runs.push_back(curve);
    if (o.progress) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "compression [%zu/%zu] %s: %s", set.runs.size(), points.size(), name.c_str(),
                    curve.error.empty() ? ("final loss " + std::to_string(curve.final_loss)).c_str()
                                        : ("skipped: " + curve.error).c_str());
      o.progress(buf);
    }
  }
  set_thresholds(set);  // runs[0] is the configured model, as the rules need (compression_sweep's order)
}

}  // namespace

std::vector<int> compression_sweep(const model::ModelConfig& model) {
  constexpr int kLowest = 2, kHighest = 8;  // model.ccqa.compression's range (launcher/config_schema.cpp)
  const int configured = model.ccqa.compression;
  const auto valid = [&](int C) {
    model::ModelConfig v = model;
    v.ccqa.compression = C;
    try {
      model::check_model_config(v);
      return true;
    } catch (const common::ConfigError&) {
      return false;
    }
  };
  // The valid C in [from, to] nearest to `want` (the smaller on a tie), if any.
  const auto nearest = [&](int want, int from, int to) {
    std::optional<int> best;
    for (int C = from; C <= to; ++C) {
      if (valid(C) && (!best || std::abs(C - want) < std::abs(*best - want))) best = C;
    }
    return best;
  };
  std::vector<int> sweep = {configured};
  if (const auto half = nearest(configured / 2, kLowest, configured - 1)) sweep.push_back(*half);
  if (const auto twice = nearest(2 * configured, configured + 1, kHighest)) sweep.push_back(*twice);
  return sweep;
}

const std::vector<std::string>& diagnose_sections() {
  static const std::vector<std::string> all = {"speed", "memory", "gradients", "learning", "components", "compression"};
  return all;
}

void check_diagnose_options(const DiagnoseOptions& o) {
  std::string names;
  for (const std::string& s : diagnose_sections()) names += (names.empty() ? "" : ",") + s;
  if (o.sections.empty()) HYDRA_FAIL(common::ConfigError, "--sections: name at least one of " << names);
  for (const std::string& s : o.sections) {
    const auto& all = diagnose_sections();
    if (std::find(all.begin(), all.end(), s) == all.end()) {
      HYDRA_FAIL(common::ConfigError, "--sections: '" << s << "' is not one of " << names);
    }
  }
  for (const auto& [name, list] : {std::pair{"--batches", &o.batches}, std::pair{"--seqs", &o.seqs}}) {
    if (list->empty()) HYDRA_FAIL(common::ConfigError, name << ": give at least one value");
    for (int64_t v : *list) {
      if (v < 1) HYDRA_FAIL(common::ConfigError, name << ": " << v << " is not a positive whole number");
    }
  }
  if (o.repeats < 1) HYDRA_FAIL(common::ConfigError, "--repeats: " << o.repeats << " must be at least 1");
  if (o.steps < 1) HYDRA_FAIL(common::ConfigError, "--steps: " << o.steps << " must be at least 1");
}

void check_diagnose_options(const DiagnoseOptions& o, const model::ModelConfig& c) {
  check_diagnose_options(o);
  const bool ccqa = model::has_layer_type(c, "ccqa");
  for (const char* s : {"components", "compression"}) {
    if (!ccqa && std::find(o.sections.begin(), o.sections.end(), s) != o.sections.end()) {
      HYDRA_FAIL(common::ConfigError, "--sections: " << s << " varies CCQA, and model.pattern has no ccqa layer; "
                                                     << "leave it out");
    }
  }
}

DiagnoseReport run_diagnose(const RunConfig& config, const DiagnoseOptions& o) {
  check_diagnose_options(o, config.model);
  const Target t = target_of(config);
  DiagnoseReport report;
  report.device = config.train.device;
  report.dtype = config.train.dtype;
  report.date = utc_now();
  report.params_total = model::compute_model_stats(config.model, config.train.seq_len).params_total;
  report.configured_compression = config.model.ccqa.compression;
  report.configured_compress = config.model.ccqa.compress;
  // Report order, whatever order --sections gave.
  for (const std::string& s : diagnose_sections()) {
    if (std::find(o.sections.begin(), o.sections.end(), s) != o.sections.end()) report.sections.push_back(s);
  }
  const bool speed = std::count(report.sections.begin(), report.sections.end(), "speed") > 0;
  Progress progress;
  progress.out = o.progress;
  progress.total = speed ? static_cast<int>((layer_types(config.model).size() + 1) * o.batches.size() * o.seqs.size()) : 0;
  const auto ran = [&](const char* s) { return std::count(report.sections.begin(), report.sections.end(), s) > 0; };
  // The data first: its errors belong at the start.
  DiagnoseData data;
  if (ran("gradients") || ran("learning") || ran("components") || ran("compression")) data = open_diagnose_data(config);
  if (ran("gradients")) run_gradients(config, o, data, report);
  if (speed) run_speed(config, o, t, progress, report);
  if (ran("memory")) run_memory(config, t, report);
  if (ran("learning")) run_learning(config, o, data, report);
  if (ran("components")) run_components(config, o, data, report);
  if (ran("compression")) run_compression(config, o, t, data, report);
  report.noise = loss_noise(report);
  report.recommendations = recommendations(report);
  return report;
}

}  // namespace hydra::train
