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

common::Json curves_json(const CurveSet& set) {
  common::Json out = common::Json::object();
  out["threshold"] = set.threshold;
  out["final_steps"] = kFinalSteps;
  common::Json runs = common::Json::array();
  for (const RunCurve& c : set.runs) {
    common::Json row = common::Json::object();
    row["name"] = c.name;
    row["change"] = c.change;
    if (!c.error.empty()) {
      row["error"] = c.error;
      runs.push(row);
      continue;
    }
    row["params"] = c.params;
    row["layers"] = c.layers;
    common::Json loss = common::Json::array();
    for (double l : c.loss) loss.push(l);
    row["loss"] = loss;
    row["final_loss"] = c.final_loss;
    row["improvement"] = c.improvement;
    row["steps_to_threshold"] = c.steps_to_threshold;
    row["ms_per_step"] = c.ms_per_step;
    if (c.peak_gb > 0) row["peak_gb"] = c.peak_gb;
    if (c.ccqa_layer_ms > 0) row["ccqa_layer_ms"] = c.ccqa_layer_ms;
    runs.push(row);
  }
  out["runs"] = runs;
  return out;
}

// The runs of a curve section as a Markdown table (`extra`: the compression's layer column).
void curves_markdown(std::ostringstream& md, const CurveSet& set, bool layer_ms) {
  md << "| run | change | params | layers | first loss | final loss | improvement | steps to " << fixed(set.threshold, 4)
     << " | ms/step |" << (layer_ms ? " CCQA layer f+b ms |" : "") << "\n|---|---|---|---|---|---|---|---|---|"
     << (layer_ms ? "---|" : "") << "\n";
  for (const RunCurve& c : set.runs) {
    md << "| " << c.name << " | " << (c.change.empty() ? "-" : "`" + c.change + "`") << " | ";
    if (!c.error.empty()) {
      md << "skipped: " << c.error << " | | | | | | |" << (layer_ms ? " |" : "") << "\n";
      continue;
    }
    md << c.params << " | " << c.layers << " | " << fixed(c.loss.front(), 4) << " | " << fixed(c.final_loss, 4) << " | "
       << fixed(c.improvement, 4) << " | " << (c.steps_to_threshold > 0 ? std::to_string(c.steps_to_threshold) : "never")
       << " | " << fixed(c.ms_per_step, 1) << " |" << (layer_ms ? " " + fixed(c.ccqa_layer_ms, 3) + " |" : "") << "\n";
  }
}

void figures_markdown(std::ostringstream& md, const std::vector<std::string>& figures, const std::string& prefix) {
  for (const auto& f : figures) {
    if (f.rfind(prefix, 0) == 0) md << "\n![" << f << "](" << f << ")\n";
  }
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
        if (p.what == "model") row["predicted_gb"] = p.predicted_gb;
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
  if (has(r, "learning")) {
    common::Json learning = curves_json(r.learning);
    common::Json routers = common::Json::array();
    for (const RouterUse& u : r.learning.routers) {
      common::Json row = common::Json::object();
      row["name"] = u.name;
      row["selected"] = u.selected;
      row["candidates"] = u.candidates;
      row["capacity_used"] = u.candidates > 0 ? static_cast<double>(u.selected) / u.candidates : 0.0;
      row["entropy"] = u.entropy;
      routers.push(row);
    }
    learning["routers"] = routers;
    out["learning"] = learning;
  }
  if (has(r, "components")) out["components"] = curves_json(r.components);
  if (has(r, "compression")) out["compression"] = curves_json(r.compression);
  common::Json advice = common::Json::array();
  for (const Recommendation& a : r.recommendations) {
    common::Json row = common::Json::object();
    row["rule"] = a.rule;
    row["text"] = a.text;
    advice.push(row);
  }
  out["recommendations"] = advice;
  common::Json noise = common::Json::object();
  noise["configured_runs"] = r.noise.runs;
  noise["spread"] = r.noise.spread;
  noise["margin"] = r.noise.margin;
  out["loss_noise"] = noise;
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
          "docs/MODEL.md (\"Counting\"); forward+backward counts three forwards. For the model, hydra "
          "info's estimate of the pass's peak memory (weights, activations and buffers at that batch and "
          "sequence: the pass has no optimizer state)"
       << (r.device == "cuda" ? " beside the allocator's measured peak" : "") << ".\n\n";
    md << "| what | batch | seq | forward ms | forward+backward ms | forward TFLOP/s | forward+backward TFLOP/s |"
       << (r.device == "cuda" ? " peak GB |" : "") << " predicted GB |\n";
    md << "|---|---|---|---|---|---|---|" << (r.device == "cuda" ? "---|" : "") << "---|\n";
    for (const SpeedPoint& p : r.speed) {
      const std::string predicted = p.what == "model" ? " " + fixed(p.predicted_gb, 2) + " |" : " |";
      md << "| " << p.what << " | " << p.batch << " | " << p.seq << " | ";
      if (!p.error.empty()) {
        md << "skipped: " << p.error << " | | | |" << (r.device == "cuda" ? " |" : "") << predicted << "\n";
        continue;
      }
      md << fixed(p.forward_ms, 3) << " | " << fixed(p.fwdbwd_ms, 3) << " | "
         << fixed(tflops(p.forward_flops, p.forward_ms), 3) << " | " << fixed(tflops(3 * p.forward_flops, p.fwdbwd_ms), 3)
         << " |" << (r.device == "cuda" ? " " + fixed(p.peak_gb, 2) + " |" : "") << predicted << "\n";
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
  const auto short_runs = [&](const CurveSet& set) {
    const RunCurve& first = set.runs.front();
    md << first.loss.size() << " training steps each, from the same seed on the same tokens as the gradient flow's "
       << "run (LibTorch's AdamW, no schedule); final loss: the mean of the last " << kFinalSteps
       << " steps; the threshold is the worst final loss of the section, and \"steps to\" is the first step "
          "whose " << kFinalSteps << "-step mean reaches it. One seed: differences under a few hundredths of a nat "
          "are noise.\n\n";
  };
  if (has(r, "learning") && !r.learning.runs.empty()) {
    md << "\n## Learning\n\n";
    md << "The configured model, then a stack of each attention type alone (the pattern made of that type, as "
          "many layers as come closest to the model's parameter count; MoD and MoR off). ";
    short_runs(r.learning);
    curves_markdown(md, r.learning, false);
    if (!r.learning.routers.empty()) {
      md << "\nRouters of the configured model over its run: tokens selected of those that could be, and the mean "
            "binary entropy of their probabilities (nats; ln 2 = 0.693 is undecided, 0 is certain).\n\n"
            "| router | selected | candidates | capacity used | entropy |\n|---|---|---|---|---|\n";
      for (const RouterUse& u : r.learning.routers) {
        md << "| " << u.name << " | " << u.selected << " | " << u.candidates << " | "
           << fixed(u.candidates > 0 ? static_cast<double>(u.selected) / u.candidates : 0.0, 3) << " | "
           << fixed(u.entropy, 3) << " |\n";
      }
    } else {
      md << "\nNo routers (MoD off, one recursion).\n";
    }
    figures_markdown(md, figures, "learning");
  }
  if (has(r, "components") && !r.components.runs.empty()) {
    md << "\n## Components\n\n";
    md << "CCQA's parts switched off or changed one at a time (with the post-mix norm off CCQA runs on the "
          "reference ops, so that run's speed is not the fused kernels'). ";
    short_runs(r.components);
    curves_markdown(md, r.components, false);
    figures_markdown(md, figures, "components");
  }
  if (has(r, "compression") && !r.compression.runs.empty()) {
    md << "\n## Compression\n\n";
    md << "CCQA's compression factor C (model.ccqa.compression; the configured one first), then the configured C "
          "in the other layout (model.ccqa.compress: what C divides, the head size or the number of heads), and "
          "one CCQA layer's forward+backward at the speed grid's largest point. ";
    short_runs(r.compression);
    curves_markdown(md, r.compression, true);
    figures_markdown(md, figures, "compression");
  }
  md << "\n## Recommendations\n\n";
  if (r.noise.runs > 0) {
    md << "The configured model ran " << r.noise.runs << " times (one per short-run section); their final losses "
       << "spread over " << fixed(r.noise.spread, 4) << " nats, so a loss difference counts above "
       << fixed(r.noise.margin, 3) << " nats (twice the spread, at least 0.02).\n\n";
  }
  if (r.recommendations.empty()) {
    md << "No rule fired on these numbers (the rules: docs/INTERFACE.md, `hydra diagnose`).\n";
  }
  for (const Recommendation& a : r.recommendations) md << "- **" << a.rule << "**: " << a.text << "\n";
  return md.str();
}

}  // namespace hydra::train
