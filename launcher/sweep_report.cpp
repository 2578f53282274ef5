#include "launcher/sweep_report.h"

#include <algorithm>
#include <cmath>

namespace hydra::launcher {
namespace {

using common::Json;
using data::JsonValue;

Json optional_number(const std::optional<double>& v) { return v ? Json(*v) : Json(); }

std::optional<double> number_in(const JsonValue* v) {
  if (v == nullptr || v->kind() != JsonValue::Kind::kNumber) return std::nullopt;
  return v->as_double();
}

// bench step's host_wait_ms.<kind>.mean, or none (NCCL: not measured).
std::optional<double> mean_wait(const JsonValue& bench, const char* kind) {
  const JsonValue* waits = bench.find("host_wait_ms");
  const JsonValue* w = waits ? waits->find(kind) : nullptr;
  return number_in(w ? w->find("mean") : nullptr);
}

// compute + exposed communication + pipeline waits = step_ms, from the mean rank's waits.
Json time_split(const JsonValue& bench, double step_ms) {
  const std::optional<double> collective = mean_wait(bench, "collective");
  const std::optional<double> recv = mean_wait(bench, "recv"), send = mean_wait(bench, "send");
  if (!collective || !recv || !send) return Json();
  Json split = Json::object();
  split["compute"] = step_ms - *collective - *recv - *send;
  split["exposed_comm"] = *collective;
  split["pipeline_wait"] = *recv + *send;
  return split;
}

// Each rank's memory figures as bench step reports them, and the largest of each.
void add_memory(Json& row, const JsonValue& bench) {
  Json per_rank = Json::array();
  double allocated = 0, reserved = 0, used = 0, predicted = 0;
  if (const JsonValue* ranks = bench.find("ranks"); ranks && ranks->is_array()) {
    for (const JsonValue& r : ranks->items()) {
      Json m = Json::object();
      for (const char* key : {"rank", "dp", "tp", "pp"}) m[key] = number_in(r.find(key)) ? Json(r.find(key)->as_int()) : Json();
      for (const char* key : {"peak_allocated_gb", "peak_reserved_gb", "device_used_gb", "predicted_peak_gb"}) {
        m[key] = optional_number(number_in(r.find(key)));
      }
      allocated = std::max(allocated, number_in(r.find("peak_allocated_gb")).value_or(0));
      reserved = std::max(reserved, number_in(r.find("peak_reserved_gb")).value_or(0));
      used = std::max(used, number_in(r.find("device_used_gb")).value_or(0));
      predicted = std::max(predicted, number_in(r.find("predicted_peak_gb")).value_or(0));
      per_rank.push(m);
    }
  }
  row["peak_allocated_gb_max"] = allocated;
  row["peak_reserved_gb_max"] = reserved;
  row["device_used_gb_max"] = used;
  row["predicted_peak_gb_max"] = predicted;
  row["memory_per_rank"] = per_rank;
}

Json string_list(const std::vector<std::string>& items) {
  Json list = Json::array();
  for (const std::string& s : items) list.push(s);
  return list;
}

const PointRun* baseline_of(const std::vector<PointRun>& runs) {
  for (const PointRun& r : runs) {
    if (r.point.ranks == 1 && r.point.layout == "dp" && r.bench) return &r;
  }
  return nullptr;
}

}  // namespace

double loss_tolerance(const std::string& dtype) { return dtype == "bf16" ? 3e-2 : 1e-4; }

std::optional<double> bench_number(const PointRun& run, const std::string& key) {
  return run.bench ? number_in(run.bench->find(key)) : std::nullopt;
}

Json sweep_json(const SweepHeader& h, const std::vector<PointRun>& runs) {
  const bool strong = h.options.series == "strong";
  const double tolerance = loss_tolerance(h.dtype);
  Json out = Json::object();
  out["version"] = h.version;
  out["config"] = h.config;
  out["sets"] = string_list(h.sets);
  out["series"] = h.options.series;
  out["launcher"] = h.options.launcher;
  out["sbatch_args"] = string_list(h.options.sbatch_args);
  std::vector<std::string> mpirun = {h.options.mpirun};
  mpirun.insert(mpirun.end(), h.options.mpirun_args.begin(), h.options.mpirun_args.end());
  out["mpirun"] = string_list(mpirun);
  Json ranks = Json::array();
  for (int n : h.options.ranks) ranks.push(n);
  out["ranks"] = ranks;
  Json layouts = Json::array();
  for (const SweepLayout& l : h.options.layouts) layouts.push(l.name);
  out["layouts"] = layouts;
  out["steps"] = h.options.steps;
  out["warmup"] = h.options.warmup;
  out["device"] = h.device;
  out["dtype"] = h.dtype;
  out["seq_len"] = h.seq_len;
  out["loss_tolerance"] = strong ? Json(tolerance) : Json();
  const PointRun* base = baseline_of(runs);
  const std::optional<double> base_tok_s = base ? bench_number(*base, "tok_s") : std::nullopt;
  const std::optional<double> base_loss = base ? bench_number(*base, "last_loss") : std::nullopt;
  Json baseline = Json();
  if (base_tok_s) {
    baseline = Json::object();
    baseline["point"] = point_name(base->point);
    baseline["tok_s"] = *base_tok_s;
    baseline["last_loss"] = optional_number(base_loss);
  }
  out["baseline"] = baseline;
  bool all_ran = true, losses_agree = true;
  Json points = Json::array();
  for (const PointRun& r : runs) {
    const SweepPoint& p = r.point;
    Json row = Json::object();
    row["name"] = point_name(p);
    row["layout"] = p.layout;
    row["ranks"] = p.ranks;
    const bool skipped = !p.skipped.empty();
    row["dp"] = skipped && p.global_batch == 0 ? Json() : Json(p.dp);
    row["tp"] = p.tp;
    row["pp"] = p.pp;
    row["global_batch"] = p.global_batch > 0 ? Json(p.global_batch) : Json();
    row["tokens_per_step"] = p.global_batch > 0 ? Json(static_cast<int64_t>(p.global_batch) * h.seq_len) : Json();
    row["status"] = skipped ? "skipped" : r.bench ? "ok" : "failed";
    row["skip_reason"] = skipped ? Json(p.skipped) : Json();
    row["command"] = string_list(r.command);
    row["exit_code"] = skipped ? Json() : Json(r.outcome.exit_code);
    row["seconds"] = skipped ? Json() : Json(r.outcome.seconds);
    row["output_tail"] = skipped || r.bench ? Json() : Json(r.outcome.tail);
    row["bench_json"] = r.bench ? Json(r.json_file) : Json();
    row["log"] = skipped ? Json() : Json(r.log_file);
    if (!skipped && !r.bench) all_ran = false;
    if (r.bench) {
      const double tok_s = bench_number(r, "tok_s").value_or(0), step_ms = bench_number(r, "step_ms").value_or(0);
      row["tok_s"] = tok_s;
      row["tok_s_per_rank"] = tok_s / p.ranks;
      row["step_ms"] = step_ms;
      row["mfu"] = optional_number(bench_number(r, "mfu"));
      row["time_split_ms"] = time_split(*r.bench, step_ms);
      add_memory(row, *r.bench);
      const std::optional<double> loss = bench_number(r, "last_loss");
      row["last_loss"] = optional_number(loss);
      // Speedup over one process; efficiency = speedup / ranks: in the weak series that is the
      // tokens/s per rank over the 1-rank tokens/s, in the strong series the speedup over N.
      row["speedup"] = base_tok_s ? Json(tok_s / *base_tok_s) : Json();
      row["efficiency"] = base_tok_s ? Json(tok_s / *base_tok_s / p.ranks) : Json();
      if (strong && base_loss && loss) {
        const double diff = *loss - *base_loss;
        const double rel = std::abs(diff) / std::max(std::abs(*base_loss), 1e-30);
        row["loss_diff"] = diff;
        row["loss_rel_diff"] = rel;
        row["loss_agrees"] = rel <= tolerance;
        if (rel > tolerance) losses_agree = false;
      } else {
        row["loss_diff"] = Json(), row["loss_rel_diff"] = Json(), row["loss_agrees"] = Json();
      }
    }
    points.push(row);
  }
  out["points"] = points;
  out["all_ran"] = all_ran;
  out["losses_agree"] = strong && base_loss ? Json(losses_agree) : Json();
  return out;
}

}  // namespace hydra::launcher
