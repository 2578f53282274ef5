// The report of `hydra diagnose` as JSON (every number; its schema is docs/INTERFACE.md's) and
// as Markdown that reads on its own, with the figures inline.
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "train/diagnose.h"

namespace hydra::train {
namespace {

bool has(const DiagnoseReport& r, const std::string& section) {
  for (const auto& s : r.sections) {
    if (s == section) return true;
  }
  return false;
}

// TFLOP/s of a pass of `flops` in `ms`.
double tflops(double flops, double ms) { return ms > 0 ? flops / (ms * 1e9) : 0.0; }

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

std::string sci(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// The parameters' gradient statistics gathered by (layer type, component) across layers.
struct ComponentGradient {
  std::string type, component;
  int count = 0;
  double mean = 0, min = 0, max = 0, first = 0, last = 0;
};

std::vector<ComponentGradient> by_component(const GradientReport& g) {
  std::vector<ComponentGradient> out;
  for (const ParamGradient& p : g.params) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const ComponentGradient& c) { return c.type == p.type && c.component == p.component; });
    if (it == out.end()) {
      out.push_back({p.type, p.component, 0, 0, p.min, p.max, 0, 0});
      it = out.end() - 1;
    }
    it->count += 1;
    it->mean += p.mean;
    it->first += p.first;
    it->last += p.last;
    it->min = std::min(it->min, p.min);
    it->max = std::max(it->max, p.max);
  }
  for (ComponentGradient& c : out) c.mean /= c.count, c.first /= c.count, c.last /= c.count;
  return out;
}

}  // namespace

common::Json diagnose_json(const DiagnoseReport& r) {
  common::Json out = common::Json::object();
  out["device"] = r.device;
  out["dtype"] = r.dtype;
  out["date"] = r.date;
  out["params_total"] = r.params_total;
  common::Json sections = common::Json::array();
  for (const auto& s : r.sections) sections.push(s);
  out["sections"] = sections;
  if (has(r, "speed")) {
    common::Json rows = common::Json::array();
    for (const SpeedPoint& p : r.speed) {
      common::Json row = common::Json::object();
      row["what"] = p.what;
      row["batch"] = p.batch;
      row["seq"] = p.seq;
      if (!p.error.empty()) {
        row["error"] = p.error;
      } else {
        row["forward_ms"] = p.forward_ms;
        row["forward_backward_ms"] = p.fwdbwd_ms;
        row["forward_flops"] = p.forward_flops;
        row["forward_tflops"] = tflops(p.forward_flops, p.forward_ms);
        row["forward_backward_tflops"] = tflops(3 * p.forward_flops, p.fwdbwd_ms);
        if (r.device == "cuda") row["peak_gb"] = p.peak_gb;
      }
      rows.push(row);
    }
    out["speed"] = rows;
  }
  if (has(r, "memory")) {
    common::Json memory = common::Json::object();
    common::Json layers = common::Json::array();
    for (const LayerMemory& m : r.layers) {
      common::Json row = common::Json::object();
      row["type"] = m.type;
      row["params"] = m.params;
      row["weight_bytes"] = m.weight_bytes;
      row["gradient_bytes"] = m.gradient_bytes;
      row["optimizer_bytes"] = m.optimizer_bytes;
      row["activation_bytes_per_token"] = m.activation_bytes_per_token;
      row["kv_bytes_per_token"] = m.kv_bytes_per_token;
      layers.push(row);
    }
    memory["layers"] = layers;
    memory["run_estimate"] = memory_estimate_json(r.estimate);
    out["memory"] = memory;
  }
  if (has(r, "gradients")) {
    const GradientReport& g = r.gradients;
    common::Json grads = common::Json::object();
    grads["steps"] = g.steps;
    grads["data"] = g.data;
    common::Json loss = common::Json::array();
    for (double l : g.loss) loss.push(l);
    grads["loss"] = loss;
    grads["median_rms"] = g.median_rms;
    grads["exploding_factor"] = kExplodingFactor;
    grads["vanishing_factor"] = kVanishingFactor;
    common::Json params = common::Json::array();
    for (const ParamGradient& p : g.params) {
      common::Json row = common::Json::object();
      row["name"] = p.name;
      row["type"] = p.type;
      row["component"] = p.component;
      row["numel"] = p.numel;
      row["mean_rms"] = p.mean_rms;
      row["mean"] = p.mean;
      row["min"] = p.min;
      row["max"] = p.max;
      row["first"] = p.first;
      row["last"] = p.last;
      row["flag"] = p.flag;
      params.push(row);
    }
    grads["params"] = params;
    common::Json components = common::Json::array();
    for (const ComponentGradient& c : by_component(g)) {
      common::Json row = common::Json::object();
      row["type"] = c.type;
      row["component"] = c.component;
      row["params"] = c.count;
      row["mean"] = c.mean;
      row["min"] = c.min;
      row["max"] = c.max;
      row["first"] = c.first;
      row["last"] = c.last;
      components.push(row);
    }
    grads["components"] = components;
    out["gradients"] = grads;
  }
  return out;
}

std::string diagnose_markdown(const DiagnoseReport& r, const std::vector<std::string>& figures) {
  std::ostringstream md;
  md << "# hydra diagnose\n\n";
  md << "Device " << r.device << ", dtype " << r.dtype << ", " << r.date << "; " << r.params_total
     << " parameters. Every number is also in report.json.\n";
  if (has(r, "speed")) {
    md << "\n## Speed\n\n";
    md << "One layer of each attention type (attention and MLP, as the model runs it) and the whole "
          "model (with the LM head and loss), median of the timed passes. TFLOP/s counts the FLOPs of "
          "docs/MODEL.md (\"Counting\"); forward+backward counts three forwards.\n\n";
    md << "| what | batch | seq | forward ms | forward+backward ms | forward TFLOP/s | forward+backward TFLOP/s |"
       << (r.device == "cuda" ? " peak GB |" : "") << "\n";
    md << "|---|---|---|---|---|---|---|" << (r.device == "cuda" ? "---|" : "") << "\n";
    for (const SpeedPoint& p : r.speed) {
      md << "| " << p.what << " | " << p.batch << " | " << p.seq << " | ";
      if (!p.error.empty()) {
        md << "skipped: " << p.error << " | | | |" << (r.device == "cuda" ? " |" : "") << "\n";
        continue;
      }
      md << fixed(p.forward_ms, 3) << " | " << fixed(p.fwdbwd_ms, 3) << " | "
         << fixed(tflops(p.forward_flops, p.forward_ms), 3) << " | " << fixed(tflops(3 * p.forward_flops, p.fwdbwd_ms), 3)
         << " |" << (r.device == "cuda" ? " " + fixed(p.peak_gb, 2) + " |" : "") << "\n";
    }
    for (const auto& f : figures) {
      if (f.rfind("speed", 0) == 0) md << "\n![" << f << "](" << f << ")\n";
    }
  }
  if (has(r, "memory")) {
    md << "\n## Memory\n\n";
    md << "Per layer of each attention type: parameters counted on the built layer, their bytes "
          "as weights and gradients (" << r.dtype << ") and optimizer state (fp32 master, m and v, a "
          "one-byte decay mask: 13 bytes each), the bytes a token leaves for the backward, and the "
          "KV cache a token needs at inference (bf16).\n\n";
    md << "| type | params | weights MiB | gradients MiB | optimizer MiB | activations bytes/token | KV cache "
          "bytes/token |\n|---|---|---|---|---|---|---|\n";
    for (const LayerMemory& m : r.layers) {
      md << "| " << m.type << " | " << m.params << " | " << fixed(mib(m.weight_bytes), 2) << " | "
         << fixed(mib(m.gradient_bytes), 2) << " | " << fixed(mib(m.optimizer_bytes), 2) << " | "
         << m.activation_bytes_per_token << " | " << m.kv_bytes_per_token << " |\n";
    }
    md << "\nThe configured run on one process (`hydra info`'s estimate, micro-batch " << r.estimate.micro_batch
       << "):\n\n| stage | weights MiB | gradients MiB | optimizer MiB | activations MiB | buffers MiB | peak MiB |\n"
          "|---|---|---|---|---|---|---|\n";
    for (size_t i = 0; i < r.estimate.stages.size(); ++i) {
      const StageMemory& s = r.estimate.stages[i];
      md << "| " << i << " | " << fixed(mib(s.weights), 1) << " | " << fixed(mib(s.gradients), 1) << " | "
         << fixed(mib(s.optimizer), 1) << " | " << fixed(mib(s.activations), 1) << " | " << fixed(mib(s.buffers), 1)
         << " | " << fixed(mib(s.peak()), 1) << " |\n";
    }
    for (const auto& f : figures) {
      if (f.rfind("memory", 0) == 0) md << "\n![" << f << "](" << f << ")\n";
    }
  }
  if (has(r, "gradients")) {
    const GradientReport& g = r.gradients;
    md << "\n## Gradient flow\n\n";
    md << g.steps << " training steps on " << g.data << " (LibTorch's AdamW at the configured learning rate, "
       << "betas, weight decay and clip; no schedule): LM loss " << fixed(g.loss.front(), 4) << " at the first step, "
       << fixed(g.loss.back(), 4) << " at the last. Gradient norms before clipping, per component (the same "
       << "parameter of every layer of that attention type, averaged over layers): mean over the steps, the "
       << "smallest and largest of any step, the first and last step.\n\n";
    md << "| type | component | layers | mean | min | max | first | last |\n|---|---|---|---|---|---|---|---|\n";
    for (const ComponentGradient& c : by_component(g)) {
      md << "| " << c.type << " | " << c.component << " | " << c.count << " | " << sci(c.mean) << " | " << sci(c.min)
         << " | " << sci(c.max) << " | " << sci(c.first) << " | " << sci(c.last) << " |\n";
    }
    std::vector<ParamGradient> sorted = g.params;
    std::sort(sorted.begin(), sorted.end(), [](const ParamGradient& a, const ParamGradient& b) { return a.mean > b.mean; });
    md << "\nThe largest gradients (mean norm): ";
    for (size_t i = 0; i < std::min<size_t>(5, sorted.size()); ++i) {
      md << (i ? ", " : "") << "`" << sorted[i].name << "` " << sci(sorted[i].mean);
    }
    md << ".\n\nFlags, on the norm per element (norm / sqrt(elements), so that matrices and vectors compare; "
       << "the median parameter's mean is " << sci(g.median_rms) << "): exploding, a mean above " << kExplodingFactor
       << "x it; vanishing, never above " << kVanishingFactor << "x it; non-finite. ";
    int flagged = 0;
    for (const ParamGradient& p : g.params) {
      if (p.flag.empty()) continue;
      if (flagged < 20) {
        md << (flagged ? ", " : "") << "`" << p.name << "` " << p.flag << " (" << sci(p.mean_rms) << " per element)";
      }
      ++flagged;
    }
    if (flagged > 20) md << " and " << flagged - 20 << " more (report.json)";
    md << (flagged ? ".\n" : "None.\n");
    for (const auto& f : figures) {
      if (f.rfind("gradients", 0) == 0) md << "\n![" << f << "](" << f << ")\n";
    }
  }
  return md.str();
}

}  // namespace hydra::train
