// `hydra plan`: every layout of N GPUs (dp x tp x pp, ZeRO stage, micro-batch size and count,
// recompute) predicted by train/plan_model.h on a cluster file, ranked by tokens/s; the
// infeasible ones with the reason. One process, no MPI, no device.
#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>

#include "common/errors.h"
#include "common/json.h"
#include "data/manifest.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "launcher/option_values.h"
#include "launcher/plan_files.h"
#include "launcher/version.h"
#include "model/model_info.h"

namespace hydra::launcher {
namespace {

constexpr double kDefaultEfficiency = 0.40;  // achieved / peak FLOP/s without --calibration

common::Json prediction_json(const train::Prediction& p) {
  common::Json row = common::Json::object();
  const train::Layout& l = p.layout;
  row["layout"] = l.name();
  row["dp"] = l.dp;
  row["tp"] = l.tp;
  row["pp"] = l.pp;
  row["zero_stage"] = l.zero;
  row["micro_batch"] = l.micro_batch;
  row["micro_batches"] = l.micro_batches;
  row["recompute"] = l.recompute;
  row["feasible"] = p.feasible;
  if (!p.feasible) {
    row["reason"] = p.reason;
    return row;
  }
  row["memory_bytes"] = train::stage_memory_json(p.memory);
  common::Json ms = common::Json::object();
  ms["compute"] = p.compute_ms;
  ms["optimizer"] = p.optimizer_ms;
  ms["tp_comm"] = p.tp_comm_ms;
  ms["pp_comm"] = p.pp_comm_ms;
  ms["dp_exposed"] = p.dp_exposed_ms;
  ms["bubble"] = p.bubble_ms;
  ms["step"] = p.step_ms;
  row["ms"] = ms;
  row["tok_s"] = p.tok_s;
  row["mfu"] = p.mfu;
  return row;
}

common::Json cluster_json(const train::Cluster& c) {
  common::Json j = common::Json::object();
  j["name"] = c.name;
  j["gpus_per_node"] = c.gpus_per_node;
  j["peak_bf16_flops"] = c.peak_flops;
  j["hbm_bytes"] = c.hbm_bytes;
  j["intra_node_bandwidth"] = c.intra.bandwidth;
  j["intra_node_latency"] = c.intra.latency;
  j["inter_node_bandwidth"] = c.inter.bandwidth;
  j["inter_node_latency"] = c.inter.latency;
  return j;
}

void print_table(const std::vector<train::Prediction>& all, int top) {
  std::printf("%-4s %-34s %4s %4s %4s %4s %6s %4s %-6s %9s %10s %8s %9s %9s %10s %12s %6s\n", "rank", "layout", "dp", "tp",
              "pp", "zero", "mbatch", "m", "recomp", "mem GB", "compute ms", "optim ms", "comm ms", "bubble ms", "step ms", "tok/s",
              "MFU");
  int shown = 0;
  for (const auto& p : all) {
    if (!p.feasible || shown >= top) break;
    const train::Layout& l = p.layout;
    std::printf("%-4d %-34s %4d %4d %4d %4d %6d %4d %-6s %9.2f %10.2f %8.2f %9.2f %9.2f %10.2f %12.0f %5.1f%%\n", ++shown,
                l.name().c_str(), l.dp, l.tp, l.pp, l.zero, l.micro_batch, l.micro_batches, l.recompute.c_str(),
                p.memory.peak() * 1e-9, p.compute_ms, p.optimizer_ms, p.exposed_comm_ms(), p.bubble_ms, p.step_ms, p.tok_s,
                p.mfu * 100);
  }
  if (shown == 0) std::printf("(no feasible layout)\n");
  // The infeasible: one line per grid and reason (the JSON lists every layout).
  std::set<std::tuple<int, int, int, std::string>> seen;
  bool header = false;
  for (const auto& p : all) {
    if (p.feasible) continue;
    const auto key = std::make_tuple(p.layout.dp, p.layout.tp, p.layout.pp, p.reason);
    if (!seen.insert(key).second) continue;
    if (!header) std::printf("infeasible (one line per grid and reason; --json lists every layout):\n");
    header = true;
    std::printf("  dp %d x tp %d x pp %d: %s\n", p.layout.dp, p.layout.tp, p.layout.pp, p.reason.c_str());
  }
}

}  // namespace

int run_plan(const CliArgs& args) {
  // A plan describes runs of any build: a CPU machine plans a CUDA cluster.
  const Config config = load_config(args.config, args.sets, BuildCheck::kAnyBuild);
  train::Cluster cluster = load_cluster(args.cluster);
  const int gpus = count_option("--gpus", args.gpus, cluster.gpus_per_node, 1);
  const int top = count_option("--top", args.top, 5, 1);
  train::PlanRates rates;
  if (!args.calibration.empty()) {
    const model::ModelStats stats = model::compute_model_stats(config.model, config.train.seq_len);
    std::vector<train::CalibrationPoint> runs;
    const auto flops_per_token = [&config](int tp) {
      return model::compute_model_stats(config.model, config.train.seq_len, tp).flops_per_token;
    };
    for (const auto& path : split_list(args.calibration)) {
      runs.push_back(load_calibration_point(path, flops_per_token, config.train.dtype));
    }
    if (std::all_of(runs.begin(), runs.end(), [](const train::CalibrationPoint& r) { return r.tp_slice > 1; })) {
      HYDRA_FAIL(common::ConfigError, "--calibration " << args.calibration
                                          << ": only --tp-slice runs; add a run of the whole model (hydra bench step "
                                             "without --tp-slice), which a slice is measured against");
    }
    rates = train::fit_rates(runs, stats.flops_per_token, static_cast<double>(stats.params_total));
    rates.achieved_source = "calibration " + args.calibration;
  } else {
    rates.achieved_flops = cluster.peak_flops * kDefaultEfficiency;
    rates.achieved_source = "peak x 0.40 (default efficiency; --calibration FILE measures it)";
  }
  if (!args.comm.empty()) apply_comm_file(args.comm, cluster);
  // Gradient buckets are reduced during the last backward on CUDA (a side stream); on the CPU
  // (MPI) the collective completes inside the hook: nothing overlaps (parallel/grad_overlap.h).
  rates.overlap_fraction = config.train.device == "cuda" ? 1.0 : 0.0;
  const std::vector<train::Prediction> all = train::plan_layouts(config, gpus, cluster, rates);

  std::printf("plan        %s on %d GPUs of %s (%d per node), global batch %d x %d tokens\n", config.source.c_str(),
              gpus, cluster.name.c_str(), cluster.gpus_per_node, config.train.global_batch, config.train.seq_len);
  std::printf("compute     %.3g FLOP/s per GPU achieved, %.3g ms per micro-batch, %.3g us per token not divided by "
              "tp, optimizer %.3g ns per parameter: %s\n",
              rates.achieved_flops, rates.micro_batch_overhead * 1e3, rates.replicated_per_token * 1e6,
              rates.optimizer_per_param * 1e9, rates.achieved_source.c_str());
  print_table(all, top);
  if (!args.json_path.empty()) {
    common::Json out = common::Json::object();
    out["version"] = version_text();
    out["config"] = args.config;
    common::Json sets = common::Json::array();
    for (const auto& s : args.sets) sets.push(s);
    out["sets"] = sets;
    out["cluster"] = cluster_json(cluster);
    out["gpus"] = gpus;
    out["global_batch"] = config.train.global_batch;
    out["seq_len"] = config.train.seq_len;
    out["achieved_flops"] = rates.achieved_flops;
    out["achieved_source"] = rates.achieved_source;
    out["micro_batch_overhead_s"] = rates.micro_batch_overhead;
    out["replicated_per_token_s"] = rates.replicated_per_token;
    out["optimizer_per_param_s"] = rates.optimizer_per_param;
    out["overlap_fraction"] = rates.overlap_fraction;
    common::Json list = common::Json::array();
    for (const auto& p : all) list.push(prediction_json(p));
    out["layouts"] = list;
    data::write_file_atomically(args.json_path, out.dump(2) + "\n");
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace hydra::launcher
