// `hydra info`: the resolved config, the process grid with every rank's coordinates and
// groups, and the model's sizes. Rank 0 prints; every rank resolves the grid, so a world
// size that does not fit the config fails the same way everywhere.
#include <cstdio>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/torch_compat.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "model/dims.h"
#include "model/model_info.h"
#include "model/parameter_inventory.h"
#include "parallel/pipeline_plan.h"
#include "parallel/process_grid.h"
#include "train/frozen_params.h"
#include "train/memory_estimate.h"

namespace hydra::launcher {
namespace {

common::Json int_list(const std::vector<int>& values) {
  common::Json list = common::Json::array();
  for (int v : values) list.push(v);
  return list;
}

common::Json grid_json(const parallel::GridShape& shape) {
  common::Json grid = common::Json::object();
  grid["world"] = shape.world();
  grid["dp"] = shape.dp;
  grid["tp"] = shape.tp;
  grid["pp"] = shape.pp;
  grid["rank_order"] = "rank = tp + tp * (dp + dp * pp): tp fastest, then dp, then pp";
  common::Json ranks = common::Json::array();
  for (int r = 0; r < shape.world(); ++r) {
    const parallel::ProcessGrid g = parallel::make_process_grid(shape, r);
    common::Json row = common::Json::object();
    row["rank"] = r;
    row["dp"] = g.coord.dp;
    row["tp"] = g.coord.tp;
    row["pp"] = g.coord.pp;
    row["tp_group"] = int_list(g.tp_ranks);
    row["dp_group"] = int_list(g.dp_ranks);
    row["pp_group"] = int_list(g.pp_ranks);
    row["pp_prev"] = g.pp_prev;
    row["pp_next"] = g.pp_next;
    ranks.push(row);
  }
  grid["ranks"] = ranks;
  return grid;
}

// train.freeze counted on the parameter inventory (no model is built), and refused as hydra
// train refuses it (a pattern that matches nothing, nothing left to train): before a job starts.
train::FreezeCounts count_freeze(const Config& config) {
  std::vector<train::ParamCount> params;
  for (const model::ParameterEntry& p : model::parameter_inventory(config.model)) params.push_back({p.name, p.elements, true});
  const train::FreezeCounts counts = train::count_frozen(config.train.freeze, params);
  if (!config.train.freeze.empty()) train::check_freeze(config.source, config.train.freeze, counts, -1);
  return counts;
}

common::Json model_json(const model::ModelStats& s, const train::FreezeCounts& freeze) {
  common::Json m = common::Json::object();
  m["vocab_padded"] = s.vocab_padded;
  m["params_total"] = s.params_total;
  m["params_stored"] = s.params_stored;
  m["params_non_embedding"] = s.params_non_embedding;
  m["params_frozen"] = freeze.frozen_elements;  // train.freeze (of the model at tp 1: the vocabulary padded to 128)
  common::Json by_type = common::Json::object();
  for (const auto& [type, count] : s.params_by_type) by_type[type] = count;
  m["params_by_type"] = by_type;
  m["effective_layers"] = s.effective_layers;
  m["kv_cache_bytes_per_token"] = s.kv_cache_bytes_per_token;
  m["flops_per_token"] = s.flops_per_token;
  return m;
}

// The same peak under each train.activation_checkpointing: the choice a user makes by memory.
void print_memory_by_recompute(const Config& config, const parallel::GridShape& shape) {
  std::printf("            by train.activation_checkpointing:");
  for (const char* mode : {"none", "mlp", "layer", "block"}) {
    Config c = config;
    c.train.activation_checkpointing = mode;
    std::printf(" %s %.2f GB%s", mode, train::estimate_memory(c, shape).worst().peak() * 1e-9,
                mode == config.train.activation_checkpointing ? " (this config)" : "");
  }
  std::printf("\n");
}

void print_memory(const train::MemoryEstimate& e, const Config& config) {
  const train::StageMemory& m = e.worst();
  const double gb = 1e-9;
  std::printf("memory      peak %.2f GB per GPU%s (train.device cuda, %s, micro-batch of %d x %d tokens): weights "
              "%.2f, fp32 gradients %.2f, optimizer %.2f, activations %.2f, buffers %.2f\n",
              m.peak() * gb, e.stages.size() > 1 ? (" on stage " + std::to_string(m.stage)).c_str() : "",
              config.train.dtype.c_str(), static_cast<int>(e.micro_batch), config.train.seq_len, m.weights * gb,
              m.gradients * gb, m.optimizer * gb, m.activations * gb, m.buffers * gb);
}

// CCQA's layout as the model builds it (model/dims.h): what model.ccqa.compress and C resolve to,
// so that a user sees the heads a config gets (the default layout changed on 2026-12-06).
common::Json ccqa_json(const Config& config) {
  const model::Dims m = model::model_dims(config.model);
  common::Json c = common::Json::object();
  c["compress"] = config.model.ccqa.compress;
  c["compression"] = config.model.ccqa.compression;
  c["query_heads"] = m.Hc;
  c["kv_heads"] = m.Hkv;
  c["head_dim"] = m.dh;
  c["query_latent"] = m.Lq;
  c["kv_latent"] = m.Lk;
  return c;
}

void print_ccqa(const Config& config) {
  const model::Dims m = model::model_dims(config.model);
  std::printf("ccqa        compress %s, C %d: %lld query heads and %lld key/value heads of %lld (latents Lq %lld, "
              "Lk %lld)\n",
              config.model.ccqa.compress.c_str(), config.model.ccqa.compression, static_cast<long long>(m.Hc),
              static_cast<long long>(m.Hkv), static_cast<long long>(m.dh), static_cast<long long>(m.Lq),
              static_cast<long long>(m.Lk));
}

// The layers and parameters of each pipeline stage (parallel/pipeline_plan.h).
common::Json pipeline_json(const Config& config, const std::vector<model::StageLayers>& plan) {
  const std::vector<int64_t> params = parallel::stage_params(config.model, plan);
  common::Json stages = common::Json::array();
  for (size_t s = 0; s < plan.size(); ++s) {
    common::Json row = common::Json::object();
    row["stage"] = static_cast<int>(s);
    row["first_layer"] = plan[s].first;
    row["end_layer"] = plan[s].end;
    row["params"] = params[s];
    stages.push(row);
  }
  return stages;
}

void print_pipeline(const Config& config, const std::vector<model::StageLayers>& plan) {
  if (plan.size() < 2) return;
  const std::vector<int64_t> params = parallel::stage_params(config.model, plan);
  for (size_t s = 0; s < plan.size(); ++s) {
    std::printf("  stage %-3zu layers %d..%d, %.2fM params%s%s\n", s, plan[s].first, plan[s].end - 1, params[s] / 1e6,
                s == 0 ? ", with the embedding" : "", s + 1 == plan.size() ? ", with the final norm and head" : "");
  }
}

void print_text(const model::ModelStats& s, const train::FreezeCounts& freeze, const Config& config,
                const parallel::GridShape& shape) {
  std::printf("config      %s\n", config.source.c_str());
  std::printf("grid        world %d = dp %d x tp %d x pp %d (tp fastest, then dp, then pp)\n",
              shape.world(), shape.dp, shape.tp, shape.pp);
  for (int r = 0; r < shape.world(); ++r) {
    const parallel::GridCoord c = parallel::coord_of(shape, r);
    std::printf("  rank %-4d dp %-3d tp %-3d pp %-3d\n", r, c.dp, c.tp, c.pp);
  }
  std::printf("model       E %d, H %d, H_kv %d, %d macro-blocks x %zu layers x %d recursions = %d layers\n",
              config.model.dim, config.model.heads, config.model.kv_heads, config.model.macro_blocks,
              config.model.pattern.size(), config.model.mor.recursions, s.effective_layers);
  std::printf("params      %.2fM total, %.2fM non-embedding (%lld as checkpoints store them and hydra train "
              "counts them, without the vocabulary's padding to %lld rows)\n",
              s.params_total / 1e6, s.params_non_embedding / 1e6, static_cast<long long>(s.params_stored),
              static_cast<long long>(s.vocab_padded));
  if (freeze.frozen_tensors > 0) {
    std::printf("freeze      %.2fM frozen in %lld tensors, %.2fM trainable (train.freeze: no gradient or optimizer "
                "state for the frozen; memory below counts them so)\n",
                freeze.frozen_elements / 1e6, static_cast<long long>(freeze.frozen_tensors),
                freeze.trainable_elements / 1e6);
  }
  std::printf("flops/token %.3g (training)\n", s.flops_per_token);
}

}  // namespace

int run_info(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  const parallel::GridShape shape = parallel::resolve_grid_shape(
      launch.world, config.parallel.dp, config.parallel.tp, config.parallel.pp);
  if (launch.rank != 0) return 0;
  common::Json info = common::Json::object();
  info["version"] = HYDRA_VERSION;
#ifdef HYDRA_CUDA
  info["build"] = "cuda";
#else
  info["build"] = "cpu";
#endif
  info["torch"] = std::to_string(common::kTorchMajor) + "." + std::to_string(common::kTorchMinor);
  info["config"] = config_to_json(config);
  info["grid"] = grid_json(shape);
  const model::ModelStats stats = model::compute_model_stats(config.model, config.train.seq_len, shape.tp);
  const train::FreezeCounts freeze = count_freeze(config);
  info["model"] = model_json(stats, freeze);
  if (model::has_layer_type(config.model, "ccqa")) info["model"]["ccqa"] = ccqa_json(config);
  // Planned here too, so that an impossible split fails before a job is launched.
  const auto plan = parallel::plan_pipeline_stages(config.model, shape.pp, config.parallel.pp_layers);
  info["pipeline"] = pipeline_json(config, plan);
  const train::MemoryEstimate memory = train::estimate_memory(config, shape);
  info["memory"] = train::memory_estimate_json(memory);
  if (args.json) {
    std::printf("%s\n", info.dump(2).c_str());
  } else {
    print_text(stats, freeze, config, shape);
    if (model::has_layer_type(config.model, "ccqa")) print_ccqa(config);
    print_pipeline(config, plan);
    print_memory(memory, config);
    print_memory_by_recompute(config, shape);
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace hydra::launcher
