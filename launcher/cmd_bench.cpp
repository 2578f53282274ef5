// `hydra bench attention` (the CUDA build's kernel benchmark of bench/), `hydra bench step`
// (the training step of a config, timed: both builds) and `hydra bench comm` (the collectives
// on each process group of a layout: both builds).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/json.h"
#include "common/logging.h"
#include "data/manifest.h"
#include "launcher/commands.h"
#include "launcher/option_values.h"
#include "train/device_peak.h"
#include "train/step_bench.h"
#include "launcher/version.h"
#include "parallel/comm_bench.h"
#ifdef HYDRA_CUDA
#include "bench/attention_bench.h"
#include "bench/kineto_trace.h"
#endif

namespace hydra::launcher {
namespace {

constexpr int kTracedSteps = 3;

// --sizes: comma-separated byte counts, each a whole number with an optional K, M or G (KiB,
// MiB, GiB), a multiple of 4 (float32 buffers). Empty: `fallback`.
std::vector<int64_t> size_list(const std::string& text, const std::vector<int64_t>& fallback) {
  if (text.empty()) return fallback;
  std::vector<int64_t> out;
  for (const std::string& item : split_list(text)) {
    int64_t scale = 1;
    std::string digits = item;
    if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'M' || digits.back() == 'G')) {
      scale = digits.back() == 'K' ? 1 << 10 : digits.back() == 'M' ? 1 << 20 : 1 << 30;
      digits.pop_back();
    }
    const std::optional<long long> value = whole_number(digits);
    if (!value || *value <= 0 || *value > (1LL << 40) / scale || *value * scale % 4 != 0) {
      HYDRA_FAIL(common::ConfigError, "--sizes: '" << item << "' is not a size in bytes (a positive multiple of 4, "
                                                   "with K, M or G for KiB, MiB, GiB)");
    }
    out.push_back(*value * scale);
  }
  return out;
}

// 4 KiB, 16 KiB, ... up to `largest` bytes.
std::vector<int64_t> sizes_up_to(int64_t largest) {
  std::vector<int64_t> out;
  for (int64_t b = 4096; b <= largest; b *= 4) out.push_back(b);
  return out;
}

// A wait's mean and largest value over the ranks, or null when the backend does not measure it.
common::Json mean_and_max(const std::vector<train::RankStepFigures>& ranks,
                          std::optional<double> train::RankStepFigures::*wait) {
  double sum = 0, most = 0;
  for (const auto& f : ranks) {
    if (!(f.*wait)) return common::Json();
    sum += *(f.*wait), most = std::max(most, *(f.*wait));
  }
  common::Json out = common::Json::object();
  out["mean"] = ranks.empty() ? 0.0 : sum / static_cast<double>(ranks.size());
  out["max"] = most;
  return out;
}

common::Json optional_number(const std::optional<double>& v) { return v ? common::Json(*v) : common::Json(); }

// Each rank's own figures, with its place in the grid.
common::Json ranks_json(const parallel::GridShape& shape, const std::vector<train::RankStepFigures>& ranks) {
  common::Json list = common::Json::array();
  for (size_t r = 0; r < ranks.size(); ++r) {
    const train::RankStepFigures& f = ranks[r];
    const parallel::GridCoord c = parallel::coord_of(shape, static_cast<int>(r));
    common::Json row = common::Json::object();
    row["rank"] = static_cast<int>(r);
    row["dp"] = c.dp;
    row["tp"] = c.tp;
    row["pp"] = c.pp;
    row["step_ms"] = f.step_ms;
    row["collective_wait_ms"] = optional_number(f.collective_wait_ms);
    row["recv_wait_ms"] = optional_number(f.recv_wait_ms);
    row["send_wait_ms"] = optional_number(f.send_wait_ms);
    row["peak_allocated_gb"] = f.peak_allocated_gb;
    row["peak_reserved_gb"] = f.peak_reserved_gb;
    row["device_used_gb"] = f.device_used_gb;
    row["predicted_peak_gb"] = f.predicted_peak_gb;
    list.push(row);
  }
  return list;
}

common::Json step_bench_json(const Config& config, const CliArgs& args, const parallel::GridShape& shape,
                             int tp_slice, const train::StepBenchResult& r) {
  const double tok_s = r.tokens_per_step / (r.wall_step_ms / 1e3);
  common::Json out = common::Json::object();
  out["version"] = version_text();
  out["config"] = args.config;
  common::Json sets = common::Json::array();
  for (const auto& s : args.sets) sets.push(s);
  out["sets"] = sets;
  out["device"] = config.train.device;
  out["gpu"] = train::current_gpu_name();
  out["dtype"] = config.train.dtype;
  out["global_batch"] = config.train.global_batch;
  out["seq_len"] = config.train.seq_len;
  out["micro_batch"] = r.micro_batch;
  out["accumulation"] = r.accumulation;
  out["warmup_steps"] = r.warmup_steps;
  out["cuda_graphs"] = r.cuda_graphs;
  out["steps"] = r.phases.steps;
  out["step_ms"] = r.wall_step_ms;
  out["tok_s"] = tok_s;
  out["flops_per_token"] = r.flops_per_token;
  if (r.peak_flops) out["mfu"] = tok_s * r.flops_per_token / *r.peak_flops;
  out["device_step_ms"] = r.phases.step_ms;
  out["host_submit_ms"] = r.phases.host_submit_ms;
  common::Json phases = common::Json::object();
  for (const auto& [phase, ms] : r.phases.phase_ms) phases[phase] = ms;
  out["phase_ms"] = phases;
  out["peak_allocated_gb"] = r.peak_allocated_gb;
  out["peak_reserved_gb"] = r.peak_reserved_gb;
  out["predicted_peak_gb"] = r.predicted_peak_gb;
  out["device_used_gb"] = r.device_used_gb;
  out["last_loss"] = r.last_loss;
  // The processes measured (a --tp-slice run is one, standing for a rank of its layout).
  out["world"] = static_cast<int>(r.ranks.size());
  if (tp_slice > 0) out["tp_slice"] = tp_slice;
  common::Json layout = common::Json::object();
  layout["dp"] = shape.dp;
  layout["tp"] = shape.tp;
  layout["pp"] = shape.pp;
  out["layout"] = layout;
  common::Json waits = common::Json::object();
  waits["collective"] = mean_and_max(r.ranks, &train::RankStepFigures::collective_wait_ms);
  waits["recv"] = mean_and_max(r.ranks, &train::RankStepFigures::recv_wait_ms);
  waits["send"] = mean_and_max(r.ranks, &train::RankStepFigures::send_wait_ms);
  out["host_wait_ms"] = waits["collective"].kind() == common::Json::Kind::kNull ? common::Json() : waits;
  common::Json calls = common::Json::object();
  for (const auto& [group, c] : r.calls_per_step) {
    common::Json g = common::Json::object();
    g["calls"] = c.calls;
    g["bytes"] = c.bytes;
    calls[group] = g;
  }
  out["calls_per_step"] = calls;
  out["ranks"] = ranks_json(shape, r.ranks);
  return out;
}

void print_step_bench(const Config& config, const CliArgs& args, int tp_slice, const train::StepBenchResult& r) {
  const double tok_s = r.tokens_per_step / (r.wall_step_ms / 1e3);
  if (tp_slice > 0) {
    std::printf("bench step: one process timing rank 0 of tensor parallelism %d, its collectives left out "
                "(tok/s and MFU below are of that one rank)\n", tp_slice);
  }
  std::printf("bench step: %s, batch %d x %d tokens (%d per rank x %d micro-batches), %s %s, %d steps after %d "
              "warm-up%s\n",
              args.config.c_str(), config.train.global_batch, config.train.seq_len, r.micro_batch, r.accumulation,
              config.train.device.c_str(), config.train.dtype.c_str(), r.phases.steps, r.warmup_steps,
              r.cuda_graphs ? ", replaying the step captured in a CUDA graph" : "");
  std::printf("  step %.2f ms | %.0f tok/s", r.wall_step_ms, tok_s);
  if (r.peak_flops) std::printf(" | MFU %.1f%%", 100.0 * tok_s * r.flops_per_token / *r.peak_flops);
  std::printf("\n");
  if (config.train.device == "cuda") {
    std::printf("  memory: peak allocated %.2f GB (hydra info predicts %.2f GB, %+.1f%%), peak reserved %.2f GB, "
                "device used %.2f GB\n",
                r.peak_allocated_gb, r.predicted_peak_gb, 100.0 * (r.predicted_peak_gb / r.peak_allocated_gb - 1),
                r.peak_reserved_gb, r.device_used_gb);
  }
  std::printf("  the host submits a step in %.2f ms (%.0f%% of the step)\n", r.phases.host_submit_ms,
              100.0 * r.phases.host_submit_ms / r.wall_step_ms);
  std::printf("  %s time per step by phase:", config.train.device == "cuda" ? "device" : "host");
  for (const auto& [phase, ms] : r.phases.phase_ms) std::printf(" %s %.2f ms;", phase.c_str(), ms);
  std::printf("\n");
  if (r.ranks.size() > 1 && r.ranks.front().collective_wait_ms) {
    double collective = 0, recv = 0, send = 0;
    for (const auto& f : r.ranks) collective += *f.collective_wait_ms, recv += *f.recv_wait_ms, send += *f.send_wait_ms;
    const double n = static_cast<double>(r.ranks.size());
    std::printf("  host blocked per step, mean over %zu ranks: collectives %.2f ms, receives %.2f ms, sends %.2f ms\n",
                r.ranks.size(), collective / n, recv / n, send / n);
  }
  if (!r.calls_per_step.empty()) {
    std::printf("  communicator calls per step (rank 0):");
    for (const auto& [group, c] : r.calls_per_step) std::printf(" %s %.0f (%.2f MB);", group.c_str(), c.calls, c.bytes / 1e6);
    std::printf("\n");
  }
  std::fflush(stdout);
}

// The config of a --tp-slice run: parallel.tp set to the slice's size. It times one rank, so it
// is one process, and a layout of tp alone (dp and pp are other processes' work).
Config tp_slice_config(const Config& config, int tp, const parallel::LaunchInfo& launch) {
  const std::string where = config.source.empty() ? "config" : config.source;
  if (launch.world != 1) {
    HYDRA_FAIL(common::ConfigError, "--tp-slice times one tensor-parallel rank in one process; this run has "
                                        << launch.world << " (run it without mpirun)");
  }
  const auto& p = config.parallel;
  if (p.dp > 1 || p.pp > 1 || (p.tp != 1 && p.tp != tp)) {
    HYDRA_FAIL(common::ConfigError, where << ": --tp-slice " << tp << " times a layout of tp " << tp
                                          << " alone; the config sets parallel.dp " << p.dp << ", tp " << p.tp << ", pp "
                                          << p.pp);
  }
  Config sliced = config;
  sliced.parallel.tp = tp;
  sliced.parallel.dp = 1;
  return sliced;
}

}  // namespace

int run_bench(const CliArgs& args, const parallel::LaunchInfo& launch) {
  HYDRA_CHECK(args.command == "bench attention", "unexpected command " << args.command);
#ifdef HYDRA_CUDA
  if (launch.world > 1) HYDRA_FAIL(common::ConfigError, "hydra bench attention runs in one process (world " << launch.world << ")");
  return bench::run_attention_bench(args.json_path);
#else
  (void)launch;
  HYDRA_FAIL(common::ConfigError,
             "hydra bench attention needs the CUDA build (cmake -DHYDRA_CUDA=ON); this is the CPU build");
#endif
}

int run_bench_step(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  train::StepBenchPlan plan;
  plan.steps = count_option("--steps", args.steps, 10, 1);
  plan.warmup = count_option("--warmup", args.warmup, 3, 0);
  const int tp_slice = args.tp_slice.empty() ? 0 : count_option("--tp-slice", args.tp_slice, 0, 2);
  const Config run_config = tp_slice > 0 ? tp_slice_config(config, tp_slice, launch) : config;
  if (config.data.path.empty()) {
    HYDRA_FAIL(common::ConfigError, (config.source.empty() ? "config" : config.source)
                                        << ": data.path: hydra bench step reads batches as hydra train does "
                                           "(hydra data prepare --output DIR; then data.path: DIR)");
  }
  if (!args.trace.empty()) {
#ifdef HYDRA_CUDA
    if (launch.rank == 0) {  // one trace: rank 0's
      plan.traced = kTracedSteps;
      plan.start_trace = [] { bench::start_kineto_trace(); };
      plan.stop_trace = [&args] { bench::stop_kineto_trace(args.trace); };
    }
#else
    HYDRA_FAIL(common::ConfigError, "--trace needs the CUDA build (LibTorch's Kineto profiler); this is the CPU build");
#endif
  }
  auto ctx = tp_slice > 0 ? build_tp_slice_context(run_config, tp_slice) : build_context(run_config, launch);
  const train::StepBenchResult result = train::run_step_bench(run_config, *ctx, plan);
  if (launch.rank != 0) return 0;
  print_step_bench(run_config, args, tp_slice, result);
  if (!args.json_path.empty()) {
    data::write_file_atomically(args.json_path,
                                step_bench_json(run_config, args, ctx->grid.shape, tp_slice, result).dump(2) + "\n");
  }
  if (plan.traced > 0) std::printf("  trace of %d more steps: %s\n", plan.traced, args.trace.c_str());
  return 0;
}

int run_bench_comm(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  const bool cuda = config.train.device == "cuda";
  parallel::CommBenchPlan plan;
  plan.sizes = size_list(args.sizes, sizes_up_to(cuda ? int64_t{1} << 30 : int64_t{16} << 20));
  plan.repeats = count_option("--repeats", args.repeats, 10, 1);
  plan.device = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  if (launch.rank == 0) plan.progress = [](const std::string& line) { common::log_info("bench comm: %s", line.c_str()); };
  if (launch.world < 2) {
    HYDRA_FAIL(common::ConfigError, "hydra bench comm measures collectives between processes: start it with "
                                    "mpirun -np N (N >= 2), e.g. scripts/hydra-mpirun -np 2 hydra bench comm ...");
  }
  auto ctx = build_context(config, launch);
  const std::vector<parallel::CommBenchRow> rows = parallel::run_comm_bench(*ctx, plan);
  if (launch.rank != 0 || args.json_path.empty()) return 0;
  common::Json out = common::Json::object();
  out["version"] = version_text();
  out["config"] = args.config;
  out["device"] = config.train.device;
  out["gpu"] = train::current_gpu_name();
  out["backend"] = ctx->backend;
  out["world"] = launch.world;
  out["layout"] = common::strprintf("dp %d x tp %d x pp %d", ctx->grid.shape.dp, ctx->grid.shape.tp, ctx->grid.shape.pp);
  out["dtype"] = "float32";
  out["repeats"] = plan.repeats;
  common::Json list = common::Json::array();
  for (const auto& r : rows) {
    common::Json row = common::Json::object();
    row["group"] = r.group;
    row["ranks"] = r.ranks;
    row["op"] = r.op;
    row["bytes"] = r.bytes;
    row["ms"] = r.ms;
    row["algbw_gbs"] = r.algbw_gbs;
    row["busbw_gbs"] = r.busbw_gbs;
    list.push(row);
  }
  out["rows"] = list;
  data::write_file_atomically(args.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace hydra::launcher
