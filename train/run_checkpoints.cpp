#include "train/run_checkpoints.h"

#include <ATen/ATen.h>

#include <chrono>
#include <utility>
#include <vector>

#include "checkpoint/weights_file.h"
#include "common/errors.h"
#include "common/logging.h"
#include "model/sharding.h"
#include "train/resume_rules.h"

namespace hydra::train {
namespace {

using Clock = std::chrono::steady_clock;

// Every parameter of this rank in model order and compute dtype: the optimizer's trainable
// ones and those train.freeze froze, which checkpoints store too (without optimizer state).
const parallel::NamedParams& all_params(Run& run) {
  if (run.checkpoints.params.empty()) {
    for (const auto& item : run.model->named_parameters()) run.checkpoints.params.emplace_back(item.key(), item.value());
  }
  return run.checkpoints.params;
}

// Where each of all_params sits in the whole model, for checkpoints (the model recorded them
// as it built them; the tied copy is not stored).
const std::vector<model::ShardInfo>& placements(Run& run) {
  if (run.checkpoints.placements.size() != all_params(run).size()) {
    run.checkpoints.placements.clear();
    for (const auto& item : all_params(run)) {
      run.checkpoints.placements.push_back(model::placement_of(run.model->placements, item.first).shard);
    }
  }
  return run.checkpoints.placements;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

parallel::Communicator* world_of(Run& run) { return run.ctx.grid.shape.world() > 1 ? run.ctx.world.get() : nullptr; }

std::string finish_async_save(Run& run) {
  if (!run.checkpoints.writer->pending()) return "";
  const auto start = Clock::now();
  const checkpoint::AsyncCheckpointWriter::Finished done = run.checkpoints.writer->finish(world_of(run));
  const double stall = ms_since(start);
  run.checkpoints.times.stall_ms = run.checkpoints.times.stall_ms.value_or(0) + stall;
  run.checkpoints.times.write_ms = done.write_ms;
  common::log_info("checkpoint: saved %s (written in the background in %.2f s; the loop waited %.1f ms for it)",
                   done.dir.c_str(), done.write_ms / 1e3, stall);
  return done.dir;
}

std::string save(Run& run, const std::string& config_json) {
  enter(run, "checkpoint save");
  checkpoint::SaveRequest req;
  req.root = run.config.checkpoint.dir;
  req.keep = run.config.checkpoint.keep;
  req.progress = run.progress;
  req.config_json = config_json;
  const auto& shape = run.ctx.grid.shape;
  req.layout = {{"world", shape.world()}, {"dp", shape.dp}, {"tp", shape.tp}, {"pp", shape.pp},
                {"zero_stage", run.config.parallel.zero_stage}, {"micro_batches", run.config.parallel.micro_batches}};
  req.rank = run.ctx.grid.rank;
  req.world = shape.world();
  req.write_weights = run.ctx.grid.coord.dp == 0;
  req.placements = placements(run);
  std::vector<const parallel::AdamWState*> states = std::as_const(run.optim).states();
  // ZeRO stage 0: every dp rank holds the whole state; dp rank 0's copy is stored.
  if (run.optim.shards().stage == 0 && run.ctx.grid.coord.dp != 0) states.clear();
  if (run.config.checkpoint.async) {
    finish_async_save(run);
    const auto start = Clock::now();
    const std::string dir =
        run.checkpoints.writer->start(req, all_params(run), run.optim.layout(), states, world_of(run));
    const double stall = ms_since(start);
    run.checkpoints.times.stall_ms = run.checkpoints.times.stall_ms.value_or(0) + stall;
    run.checkpoints.times.copy_ms = run.checkpoints.times.copy_ms.value_or(0) + stall;
    common::log_info("checkpoint: %s copied to host in %.1f ms, writing in the background", dir.c_str(), stall);
    return dir;
  }
  common::log_info("checkpoint: saving step %lld (training waits; checkpoint.async: true writes in the background)",
                   static_cast<long long>(run.progress.step));
  const auto start = Clock::now();
  const std::string dir =
      checkpoint::save_checkpoint(req, all_params(run), run.optim.layout(), states, world_of(run));
  const double took = ms_since(start);
  run.checkpoints.times.stall_ms = run.checkpoints.times.stall_ms.value_or(0) + took;
  run.checkpoints.times.write_ms = took;
  common::log_info("checkpoint: saved %s in %.2f s", dir.c_str(), took / 1e3);
  return dir;
}

namespace {

// Loads `dir` on every rank; true only if it loaded on all of them (one collective), so that
// no rank continues from a checkpoint another rank could not read.
bool load_everywhere(Run& run, const std::string& dir, checkpoint::LoadedCheckpoint& out, std::string& problem) {
  try {
    // Whatever dp, tp, pp or ZeRO stage wrote it: each rank reads the parts that overlap its own.
    common::log_info("resume: loading %s", dir.c_str());  // a large model takes a while: say what
    const auto start = Clock::now();
    out = checkpoint::load_checkpoint(dir, all_params(run), run.optim.layout(), run.optim.states(), placements(run));
    run.checkpoints.times.load_ms = ms_since(start);
  } catch (const common::InputError& e) {
    problem = e.what();
  }
  if (run.ctx.grid.shape.world() == 1) return problem.empty();
  at::Tensor failed = at::full({1}, problem.empty() ? 0.0 : 1.0, run.device.dtype(at::kFloat));
  run.ctx.world->all_reduce(failed, parallel::ReduceOp::kMax);
  if (failed.cpu().item<float>() > 0.5f && problem.empty()) problem = "it could not be read on another rank";
  return problem.empty();
}

}  // namespace

checkpoint::LoadedCheckpoint load_weights_explained(const std::string& source, const parallel::NamedParams& params,
                                                    const std::vector<model::ShardInfo>& placements,
                                                    const std::string& config_json) {
  try {
    return checkpoint::load_weights(source, params, placements);
  } catch (const common::InputError& e) {
    std::string differences;
    try {
      differences = model_differences(checkpoint::stored_config(source), config_json, source);
    } catch (const common::HydraError&) {
      throw e;  // the stored config cannot be read either: the load's own error says what is wrong
    }
    if (differences.empty()) throw;
    HYDRA_FAIL(common::InputError, e.what() << "\n" << source << " was written with other model settings than this run's:"
                                            << differences << "\nSet them back (--set key=value) to load its weights");
  }
}

checkpoint::LoadedCheckpoint load_weights(Run& run, const std::string& source, const std::string& config_json) {
  return load_weights_explained(source, all_params(run), placements(run), config_json);
}

void restore(Run& run, const RunRequest& request) {
  enter(run, "checkpoint load");
  if (request.resume) {
    // An explicit directory must load; `latest` falls back to the newest that does.
    std::vector<std::string> candidates = {*request.resume};
    if (*request.resume == "latest") candidates = checkpoint::list_committed(run.config.checkpoint.dir);
    if (candidates.empty()) {
      common::log_info("resume: no complete checkpoint under %s; starting fresh", run.config.checkpoint.dir.c_str());
      return;
    }
    for (const std::string& dir : candidates) {
      checkpoint::LoadedCheckpoint ckpt;
      std::string problem;
      if (load_everywhere(run, dir, ckpt, problem)) {
        run.progress = ckpt.progress;
        const double seconds = run.checkpoints.times.load_ms.value_or(0) / 1e3;
        common::log_info("resume: %s at step %lld, %lld samples consumed (read %.2f GB in %.1f s on rank 0)", dir.c_str(),
                         static_cast<long long>(ckpt.progress.step),
                         static_cast<long long>(ckpt.progress.consumed_samples), ckpt.bytes_read / 1e9, seconds);
        return;
      }
      if (*request.resume != "latest") HYDRA_FAIL(common::InputError, problem);
      common::log_warn("resume: skipping %s: %s; trying the previous checkpoint", dir.c_str(), problem.c_str());
    }
    HYDRA_FAIL(common::InputError, "resume: none of the " << candidates.size() << " complete checkpoints under "
                                       << run.config.checkpoint.dir << " could be loaded (see the warnings above)");
  } else if (request.init_from) {
    // A new run from these weights: run.progress stays at step 0, so the step counter, the
    // schedule (warmup, then the cosine over train.steps), the data order and AdamW's bias
    // corrections all start afresh; the checkpoint's position and optimizer state are not read.
    const checkpoint::LoadedCheckpoint source = load_weights(run, *request.init_from, request.config_json);
    run.optim.reload_master_from_params();
    common::log_info("init-from: weights of %s (its step %lld); a new run from step 0: fresh optimizer, schedule "
                     "and data position", request.init_from->c_str(), static_cast<long long>(source.progress.step));
  }
}

}  // namespace hydra::train
