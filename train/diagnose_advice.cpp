// The recommendations of `hydra diagnose`: rules over the measured numbers, each with an id that
// docs/INTERFACE.md documents. A rule only fires on numbers a section measured; its text quotes
// them. The loss comparisons are between short runs from one seed on the same tokens, which are
// not bitwise repeatable on a GPU (atomics in attention backward, split-K products): the sections
// run the configured model up to three times, and the spread of those runs' final losses is the
// noise. A difference counts when it exceeds the margin, max(kLossMargin, 2 x noise).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "train/diagnose_runs.h"

namespace hydra::train {
namespace {

constexpr double kLossMargin = 0.02;    // nats: the least final-loss difference reported
constexpr double kTimeMargin = 0.05;    // a variant at least 5% faster per step counts as faster
constexpr double kSureEntropy = 0.05;   // nats: a router this sure has stopped choosing (H(0.99) = 0.056)

std::string format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

void gradient_rules(const GradientReport& g, std::vector<Recommendation>& out) {
  for (const ParamGradient& p : g.params) {
    if (p.flag == "non-finite") {
      out.push_back({"gradient-non-finite", p.name + ": a non-finite gradient within " + std::to_string(g.steps) +
                                                " steps; lower train.lr or check the data (the run would diverge)"});
    } else if (p.flag == "exploding") {
      out.push_back({"gradient-exploding",
                     p.name + format(": gradient norm per element %.3g, %.0fx the median parameter's (the flag is at "
                                     "%.0fx); train.clip bounds the update, not the cause: check this parameter's "
                                     "initialisation and train.lr",
                                     p.mean_rms, p.mean_rms / std::max(g.median_rms, 1e-300), kExplodingFactor)});
    } else if (p.flag == "vanishing") {
      out.push_back({"gradient-vanishing",
                     p.name + format(": gradient norm per element never above %.3g, %.2gx the median parameter's "
                                     "(the flag is below %gx): it barely trains; look for a path that blocks its "
                                     "gradient (a gate near 0, a norm weight near 0)",
                                     p.max_rms, p.max_rms / std::max(g.median_rms, 1e-300), kVanishingFactor)});
    }
  }
}

const RunCurve* configured(const CurveSet& set) {
  return set.runs.empty() || !set.runs[0].error.empty() ? nullptr : &set.runs[0];
}

void component_rules(const CurveSet& set, double margin, std::vector<Recommendation>& out) {
  const RunCurve* base = configured(set);
  if (base == nullptr) return;
  for (size_t i = 1; i < set.runs.size(); ++i) {
    const RunCurve& v = set.runs[i];
    if (!v.error.empty()) continue;
    const double gain = base->final_loss - v.final_loss;
    const double faster = 1.0 - v.ms_per_step / std::max(base->ms_per_step, 1e-9);
    const bool part_off = v.name.size() > 4 && v.name.compare(v.name.size() - 4, 4, " off") == 0;
    if (gain > margin) {
      out.push_back({"component-change-helps",
                     v.name + format(": final loss %.4f against %.4f as configured (%.3f nats lower over the same "
                                     "steps); try ",
                                     v.final_loss, base->final_loss, gain) + v.change});
    } else if (part_off && gain > -margin && faster > kTimeMargin) {
      out.push_back({"component-buys-little",
                     v.name + format(": final loss within %.3f nats of the configured model (%.4f against %.4f) "
                                     "and ", margin, v.final_loss, base->final_loss) +
                         format("%.0f%% faster per step; over these steps the part buys little: ", 100 * faster) +
                         v.change});
    }
  }
}

void compression_rules(const CurveSet& set, int configured_c, const std::string& configured_compress, double margin,
                       std::vector<Recommendation>& out) {
  const RunCurve* best = nullptr;
  for (const RunCurve& r : set.runs) {
    if (r.error.empty() && (best == nullptr || r.final_loss < best->final_loss)) best = &r;
  }
  if (best == nullptr) return;
  // The fastest compression (factor or layout) whose loss is within the margin of the best.
  const RunCurve* pick = nullptr;
  for (const RunCurve& r : set.runs) {
    if (!r.error.empty() || r.final_loss > best->final_loss + margin) continue;
    if (pick == nullptr || r.ms_per_step < pick->ms_per_step) pick = &r;
  }
  if (pick->name == "C " + std::to_string(configured_c)) return;
  const std::string against =
      pick == best ? format(": the lowest final loss (%.4f)", pick->final_loss)
                   : format(": final loss %.4f, within %.3f nats of the best (", pick->final_loss, margin) + best->name +
                         format(", %.4f)", best->final_loss);
  out.push_back({"compression-choice",
                 pick->name + against + format(" at %.1f ms per step, the fastest within the margin; the configured ",
                                               pick->ms_per_step) +
                     "C " + std::to_string(configured_c) + " (compress " + configured_compress +
                     ") is slower or worse: try " + pick->change});
}

void learning_rules(const LearningReport& L, double margin, std::vector<Recommendation>& out) {
  const RunCurve* model = configured(L);
  if (model != nullptr) {
    for (size_t i = 1; i < L.runs.size(); ++i) {
      const RunCurve& s = L.runs[i];
      if (s.error.empty() && model->final_loss - s.final_loss > margin) {
        out.push_back({"layer-type-learns-faster",
                       s.name + format(" (%.3gM parameters): final loss %.4f against the hybrid's %.4f over the same "
                                       "steps; over a short run the hybrid pattern does not pay for itself yet",
                                       s.params / 1e6, s.final_loss, model->final_loss)});
      }
    }
  }
  for (const RouterUse& u : L.routers) {
    if (u.candidates > 0 && u.entropy < kSureEntropy) {
      out.push_back({"router-decided",
                     u.name + format(": mean entropy %.3f nats (below %.2f): its probabilities sit at 0 or 1, so the "
                                     "top-k choice no longer follows the learnt scores; check mod.aux_weight / "
                                     "mor.aux_weight", u.entropy, kSureEntropy)});
    }
  }
}

}  // namespace

LossNoise loss_noise(const DiagnoseReport& r) {
  std::vector<double> finals;
  const auto take = [&](const CurveSet& set, const std::string& name) {
    for (const RunCurve& c : set.runs) {
      if (c.name == name && c.error.empty() && !c.loss.empty()) finals.push_back(c.final_loss);
    }
  };
  take(r.learning, "model");
  take(r.components, "as configured");
  take(r.compression, "C " + std::to_string(r.configured_compression));
  LossNoise n;
  n.runs = static_cast<int>(finals.size());
  if (!finals.empty()) n.spread = *std::max_element(finals.begin(), finals.end()) - *std::min_element(finals.begin(), finals.end());
  n.margin = std::max(kLossMargin, 2 * n.spread);
  return n;
}

std::vector<Recommendation> recommendations(const DiagnoseReport& r) {
  std::vector<Recommendation> out;
  const auto ran = [&](const std::string& s) { return std::count(r.sections.begin(), r.sections.end(), s) > 0; };
  const double margin = r.noise.margin;
  if (ran("gradients")) gradient_rules(r.gradients, out);
  if (ran("learning")) learning_rules(r.learning, margin, out);
  if (ran("components")) component_rules(r.components, margin, out);
  if (ran("compression")) {
    compression_rules(r.compression, r.configured_compression, r.configured_compress, margin, out);
  }
  return out;
}

}  // namespace hydra::train
