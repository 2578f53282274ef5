// `hydra diagnose`'s learning and components sections, and what every short-run section shares:
// a run as a curve, and the threshold of a set of curves.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/errors.h"
#include "model/dims.h"
#include "model/model_checks.h"
#include "model/model_info.h"
#include "train/diagnose_runs.h"

namespace hydra::train {
namespace {

// Mean of the kFinalSteps losses ending at step i (fewer at the start).
double trailing_mean(const std::vector<double>& loss, size_t i) {
  const size_t begin = i + 1 >= kFinalSteps ? i + 1 - kFinalSteps : 0;
  double sum = 0;
  for (size_t k = begin; k <= i; ++k) sum += loss[k];
  return sum / static_cast<double>(i + 1 - begin);
}

void say(const DiagnoseOptions& o, const std::string& section, size_t index, size_t total, const RunCurve& c) {
  if (!o.progress) return;
  char buf[200];
  if (!c.error.empty()) {
    std::snprintf(buf, sizeof buf, "%s [%zu/%zu] %s: skipped (%s)", section.c_str(), index, total, c.name.c_str(),
                  c.error.c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%s [%zu/%zu] %s: final loss %.4f, %.1f ms/step", section.c_str(), index, total,
                  c.name.c_str(), c.final_loss, c.ms_per_step);
  }
  o.progress(buf);
}

// A variant of the configured model: its curve, or the reason it has no valid model.
RunCurve run_variant(const RunConfig& rc, const DiagnoseOptions& o, const DiagnoseData& data, const std::string& name,
                     const std::string& change, const model::ModelConfig& variant) {
  try {
    model::check_model_config(variant);
  } catch (const common::ConfigError& e) {
    RunCurve c;
    c.name = name;
    c.change = change;
    c.error = e.what();
    return c;
  }
  return curve_of(name, change, variant, short_run(rc, variant, data, o.steps));
}

// pattern = [type] x n with n chosen so that the parameter count is closest to the model's.
model::ModelConfig stack_of(const model::ModelConfig& c, const std::string& type, std::string& change) {
  const int64_t want = model::compute_model_stats(c, 1).params_total;
  model::ModelConfig best;
  int64_t best_gap = -1;
  for (size_t n = 1; n <= 2 * c.pattern.size(); ++n) {
    model::ModelConfig s = c;
    s.pattern.assign(n, type);
    s.mod.enabled = false;
    s.mor.recursions = 1;
    const int64_t gap = std::llabs(model::compute_model_stats(s, 1).params_total - want);
    if (best_gap < 0 || gap < best_gap) best = s, best_gap = gap;
  }
  change = "model.pattern=[" + type + " x " + std::to_string(best.pattern.size()) +
           "] model.mod.enabled=false model.mor.recursions=1";
  return best;
}

}  // namespace

RunCurve curve_of(const std::string& name, const std::string& change, const model::ModelConfig& m, const ShortRun& run) {
  RunCurve c;
  c.name = name;
  c.change = change;
  c.params = run.params;
  c.layers = model::compute_model_stats(m, 1).effective_layers;
  c.loss = run.loss;
  c.final_loss = run.loss.empty() ? 0.0 : trailing_mean(run.loss, run.loss.size() - 1);
  c.improvement = run.loss.empty() ? 0.0 : run.loss.front() - c.final_loss;
  c.ms_per_step = run.ms_per_step;
  c.peak_gb = run.peak_gb;
  return c;
}

void set_thresholds(CurveSet& set) {
  set.threshold = 0;
  bool any = false;
  for (const RunCurve& c : set.runs) {
    if (!c.error.empty() || c.loss.empty()) continue;
    set.threshold = any ? std::max(set.threshold, c.final_loss) : c.final_loss;
    any = true;
  }
  for (RunCurve& c : set.runs) {
    c.steps_to_threshold = -1;
    for (size_t i = 0; i < c.loss.size(); ++i) {
      if (trailing_mean(c.loss, i) <= set.threshold) {
        c.steps_to_threshold = static_cast<int>(i) + 1;
        break;
      }
    }
  }
}

void run_learning(const RunConfig& rc, const DiagnoseOptions& o, const DiagnoseData& data, DiagnoseReport& report) {
  LearningReport& L = report.learning;
  std::vector<std::string> types;
  for (const std::string& t : rc.model.pattern) {
    if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
  }
  const size_t total = 1 + types.size();
  const ShortRun model_run = short_run(rc, rc.model, data, o.steps);
  L.runs.push_back(curve_of("model", "", rc.model, model_run));
  L.routers = model_run.routers;
  say(o, "learning", 1, total, L.runs.back());
  for (const std::string& type : types) {
    std::string change;
    const model::ModelConfig stack = stack_of(rc.model, type, change);
    L.runs.push_back(run_variant(rc, o, data, type + " stack", change, stack));
    say(o, "learning", L.runs.size(), total, L.runs.back());
  }
  set_thresholds(L);
}

void run_components(const RunConfig& rc, const DiagnoseOptions& o, const DiagnoseData& data, DiagnoseReport& report) {
  CurveSet& set = report.components;
  const model::ModelConfig& c = rc.model;
  struct Variant {
    std::string name, change;
    model::ModelConfig config;
  };
  std::vector<Variant> variants{{"as configured", "", c}};
  const auto add = [&](const std::string& name, const std::string& change, auto&& edit) {
    model::ModelConfig v = c;
    edit(v.ccqa);
    variants.push_back({name, change, v});
  };
  if (!model::has_layer_type(c, "ccqa")) {
    HYDRA_FAIL(common::ConfigError, "hydra diagnose --sections components: model.pattern has no ccqa layer, whose "
                                        "parts the section switches off; leave the section out");
  }
  if (c.ccqa.use_convs) add("convolutions off", "model.ccqa.use_convs=false", [](auto& a) { a.use_convs = false; });
  if (c.ccqa.qk_mean) add("qk-mean off", "model.ccqa.qk_mean=false", [](auto& a) { a.qk_mean = false; });
  for (double gain : {0.25, 0.5, 1.0}) {
    if (c.ccqa.qk_mean && gain == c.ccqa.qk_mean_gain) continue;
    char name[48], change[64];
    std::snprintf(name, sizeof name, "qk-mean gain %g", gain);
    std::snprintf(change, sizeof change, "model.ccqa.qk_mean=true model.ccqa.qk_mean_gain=%g", gain);
    add(name, change, [gain](auto& a) {
      a.qk_mean = true;
      a.qk_mean_gain = gain;
    });
  }
  if (c.ccqa.value_shift) add("value shift off", "model.ccqa.value_shift=false", [](auto& a) { a.value_shift = false; });
  if (c.ccqa.post_mix_norm) {
    add("post-mix norm off", "model.ccqa.post_mix_norm=false", [](auto& a) { a.post_mix_norm = false; });
  }
  for (size_t i = 0; i < variants.size(); ++i) {
    set.runs.push_back(run_variant(rc, o, data, variants[i].name, variants[i].change, variants[i].config));
    say(o, "components", i + 1, variants.size(), set.runs.back());
  }
  set_thresholds(set);
}

}  // namespace hydra::train
