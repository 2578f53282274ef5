#include "train/plan_model.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "common/errors.h"
#include "common/logging.h"
#include "model/model_checks.h"
#include "model/model_info.h"
#include "parallel/pipeline_plan.h"
#include "parallel/process_grid.h"

namespace hydra::train {
namespace {

// A group of `span` consecutive-in-rank-order GPUs (tp fastest, then dp, then pp) crosses a
// node boundary when it is wider than a node.
const Link& link_for(const Cluster& cluster, int span) {
  return span > cluster.gpus_per_node ? cluster.inter : cluster.intra;
}

std::string fmt(const char* f, double a, double b) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}

}  // namespace

std::string Layout::name() const {
  return "dp" + std::to_string(dp) + "-tp" + std::to_string(tp) + "-pp" + std::to_string(pp) + "-z" +
         std::to_string(zero) + "-mb" + std::to_string(micro_batch) + "x" + std::to_string(micro_batches) + "-" +
         recompute;
}

RunConfig with_layout(const RunConfig& base, const Layout& l) {
  RunConfig c = base;
  c.parallel.dp = l.dp;
  c.parallel.tp = l.tp;
  c.parallel.pp = l.pp;
  c.parallel.zero_stage = l.zero;
  c.parallel.micro_batches = l.micro_batches;
  c.parallel.pp_layers.clear();
  c.train.micro_batch = l.micro_batch;
  c.train.activation_checkpointing = l.recompute;
  return c;
}

double recompute_flops_factor(const RunConfig& config, const std::string& mode) {
  if (mode == "layer" || mode == "block") return 4.0 / 3.0;  // the whole forward once more
  if (mode == "mlp") {
    const model::ModelStats s = model::compute_model_stats(config.model, config.train.seq_len);
    const auto it = s.params_by_type.find("mlp");
    const double share = it == s.params_by_type.end() || s.params_non_embedding == 0
                             ? 0.0
                             : static_cast<double>(it->second) / s.params_non_embedding;
    return 1.0 + share / 3.0;
  }
  return 1.0;
}

Prediction predict_layout(const RunConfig& base, const Layout& l, const Cluster& cluster, const PlanRates& rates) {
  Prediction p;
  p.layout = l;
  const RunConfig c = with_layout(base, l);
  const int world = l.dp * l.tp * l.pp;
  if (c.model.heads % l.tp != 0) {
    p.feasible = false;
    p.reason = "tp " + std::to_string(l.tp) + " does not divide " + std::to_string(c.model.heads) + " heads";
    return p;
  }
  // (CCQA's KV heads that tp does not divide stay whole on every rank: model/attention_ccqa.cpp;
  // a gqa layer's must split.)
  try {
    model::check_tensor_parallel(c.model, l.tp);
  } catch (const common::ConfigError& e) {
    p.feasible = false;
    p.reason = e.what();
    return p;
  }
  std::vector<model::StageLayers> plan;
  parallel::GridShape shape;
  try {
    shape = parallel::resolve_grid_shape(world, l.dp, l.tp, l.pp);
    plan = parallel::plan_pipeline_stages(c.model, l.pp, {});
    p.memory = estimate_memory(c, shape).worst();
  } catch (const std::exception& e) {
    p.feasible = false;
    p.reason = e.what();
    return p;
  }
  if (p.memory.peak() > cluster.hbm_bytes) {
    p.feasible = false;
    p.reason = fmt("memory %.1f GB > %.1f GB HBM", p.memory.peak() * 1e-9, cluster.hbm_bytes * 1e-9);
    return p;
  }
  const model::ModelStats stats = model::compute_model_stats(c.model, c.train.seq_len, l.tp);
  const int layers = c.model.macro_blocks * static_cast<int>(c.model.pattern.size());
  int widest = 0;
  for (const auto& s : plan) widest = std::max(widest, (s.end < 0 ? layers : s.end) - s.first);
  const double stage_frac = static_cast<double>(widest) / layers;
  const double stage_layers = stage_frac * stats.effective_layers;
  int64_t stage_params = 0;
  for (int64_t n : parallel::stage_params(c.model, plan)) stage_params = std::max(stage_params, n);

  const double tokens = static_cast<double>(c.train.global_batch) * c.train.seq_len;
  const double dtype_bytes = c.train.dtype == "bf16" ? 2.0 : 4.0;
  const int m = l.micro_batches;
  const double flops = stats.flops_per_token * tokens * recompute_flops_factor(c, l.recompute);
  // Every rank of a stage runs each micro-batch through the stage's layers (tp splits the
  // arithmetic, not the operations): the overhead scales with the stage and the recompute.
  const double overhead_s =
      m * rates.micro_batch_overhead * stage_frac * recompute_flops_factor(c, l.recompute);
  const double replicated_s =
      rates.replicated_per_token * tokens / l.dp * stage_frac * recompute_flops_factor(c, l.recompute);
  const double compute_s = overhead_s + flops * stage_frac / (l.dp * l.tp) / rates.achieved_flops + replicated_s;
  // The optimizer updates the stage's tp slice, of which ZeRO 1/2 leave each dp rank a 1/dp share.
  const double optimizer_s =
      rates.optimizer_per_param * static_cast<double>(stage_params) / l.tp / (l.zero >= 1 ? l.dp : 1);

  // Megatron tp: 2 all-reduces of the activations forward, 2 backward, per layer and
  // micro-batch; a recomputed forward repeats its 2.
  const double act_bytes = static_cast<double>(l.micro_batch) * c.train.seq_len * c.model.dim * dtype_bytes;
  const int reduces = l.recompute == "layer" || l.recompute == "block" ? 6 : 4;
  const double tp_s = m * stage_layers * reduces * allreduce_seconds(act_bytes, l.tp, link_for(cluster, l.tp));
  // 1F1B: an activation forward and its gradient backward cross each stage boundary per
  // micro-batch; the critical path passes m + p - 1 of each.
  const double pp_s =
      l.pp > 1 ? 2.0 * (m + l.pp - 1) * p2p_seconds(act_bytes, link_for(cluster, l.tp * l.dp * l.pp)) : 0.0;
  const double bubble_s = bubble_fraction(l.pp, m) * (compute_s + tp_s);

  // dp: the flat fp32 gradient of this rank's parameters, in buckets; ZeRO 1/2 reduce-scatter it
  // and all-gather the updated weights (model dtype) after the step.
  double dp_s = 0;
  if (l.dp > 1) {
    const Link& link = link_for(cluster, l.tp * l.dp);
    const double grad_bytes = 4.0 * stage_params / l.tp;
    const double reduce_s = l.zero == 0 ? allreduce_seconds(grad_bytes, l.dp, link)
                                        : reduce_scatter_seconds(grad_bytes, l.dp, link);
    const double gather_s = l.zero == 0 ? 0.0 : all_gather_seconds(dtype_bytes * stage_params / l.tp, l.dp, link);
    double exposed = reduce_s;
    if (c.parallel.overlap_grad_reduce && rates.overlap_fraction > 0) {
      const double last_backward_s = compute_s / m * 2.0 / 3.0;
      const double bucket_bytes = c.parallel.bucket_mb * 1024 * 1024;
      const double last_bucket_s = reduce_s * std::min(1.0, bucket_bytes / grad_bytes);
      exposed = std::max(reduce_s - rates.overlap_fraction * last_backward_s, last_bucket_s);
    }
    dp_s = exposed + gather_s;
  }
  p.compute_ms = compute_s * 1e3;
  p.optimizer_ms = optimizer_s * 1e3;
  p.tp_comm_ms = tp_s * 1e3;
  p.pp_comm_ms = pp_s * 1e3;
  p.bubble_ms = bubble_s * 1e3;
  p.dp_exposed_ms = dp_s * 1e3;
  p.step_ms = p.compute_ms + p.optimizer_ms + p.exposed_comm_ms() + p.bubble_ms;
  p.tok_s = tokens / (p.step_ms / 1e3);
  p.mfu = p.tok_s * stats.flops_per_token / (world * cluster.peak_flops);
  return p;
}

namespace {

// achieved_flops and micro_batch_overhead from the whole-model runs (fit_rates, first part).
void fit_whole_model(const std::vector<const CalibrationPoint*>& runs, double flops_per_token, PlanRates& rates) {
  // Least squares of t = a + x / R over the runs' FLOPs x.
  double n = 0, sx = 0, st = 0, sxx = 0, sxt = 0;
  const CalibrationPoint* largest = runs.front();
  for (const CalibrationPoint* r : runs) {
    const double x = flops_per_token * r->tokens;
    n += 1, sx += x, st += r->forward_backward_s, sxx += x * x, sxt += x * r->forward_backward_s;
    if (r->tokens > largest->tokens) largest = r;
  }
  const double det = n * sxx - sx * sx;
  if (runs.size() >= 2 && det > 0) {
    const double slope = (n * sxt - sx * st) / det, intercept = (st - slope * sx) / n;
    if (slope > 0 && intercept >= 0) {
      rates.achieved_flops = 1.0 / slope;
      rates.micro_batch_overhead = intercept;
      return;
    }
  }
  rates.achieved_flops = flops_per_token * largest->tokens / largest->forward_backward_s;
}

}  // namespace

PlanRates fit_rates(const std::vector<CalibrationPoint>& runs, double flops_per_token, double params) {
  std::vector<const CalibrationPoint*> whole, slices;
  for (const auto& r : runs) (r.tp_slice > 1 ? slices : whole).push_back(&r);
  HYDRA_CHECK(!whole.empty(), "no whole-model calibration run (a --tp-slice run only measures against one)");
  PlanRates rates;
  double opt = 0;
  for (const CalibrationPoint* r : whole) opt += r->optimizer_s;
  rates.optimizer_per_param = opt / whole.size() / params;
  fit_whole_model(whole, flops_per_token, rates);
  if (slices.empty()) return rates;
  const double c = flops_per_token / rates.achieved_flops;  // seconds per token, whole model
  double sum = 0;
  for (const CalibrationPoint* s : slices) {
    const double k = s->tp_slice;
    const double c_k = (s->forward_backward_s - rates.micro_batch_overhead) / s->tokens;
    // (Below 0: the slice ran faster than an even split, timing noise; at c all the work would
    // be replicated and the divided rate infinite: 0.95 c keeps it finite.)
    sum += std::clamp((k * c_k - c) / (k - 1), 0.0, 0.95 * c);
  }
  rates.replicated_per_token = sum / slices.size();
  rates.achieved_flops = flops_per_token / (c - rates.replicated_per_token);
  return rates;
}

std::vector<Prediction> plan_layouts(const RunConfig& base, int gpus, const Cluster& cluster, const PlanRates& rates) {
  std::vector<Prediction> all;
  for (int tp = 1; tp <= gpus; ++tp) {
    if (gpus % tp) continue;
    for (int pp = 1; pp <= gpus / tp; ++pp) {
      if ((gpus / tp) % pp) continue;
      const int dp = gpus / tp / pp;
      if (base.train.global_batch % dp) {
        Prediction p;
        p.layout = Layout{dp, tp, pp, 0, 0, 0, "none"};
        p.feasible = false;
        p.reason = "dp " + std::to_string(dp) + " does not divide train.global_batch " +
                   std::to_string(base.train.global_batch);
        all.push_back(p);
        continue;
      }
      const int per_dp = base.train.global_batch / dp;
      for (int m = 1; m <= per_dp; ++m) {
        if (per_dp % m) continue;
        for (int zero = 0; zero <= (dp > 1 ? 2 : 0); ++zero) {
          for (const char* mode : {"none", "mlp", "layer", "block"}) {
            all.push_back(predict_layout(base, Layout{dp, tp, pp, zero, per_dp / m, m, mode}, cluster, rates));
          }
        }
      }
    }
  }
  std::stable_sort(all.begin(), all.end(), [](const Prediction& a, const Prediction& b) {
    if (a.feasible != b.feasible) return a.feasible;
    return a.feasible && a.tok_s > b.tok_s;
  });
  return all;
}

}  // namespace hydra::train
