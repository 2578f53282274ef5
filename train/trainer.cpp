#include "train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "checkpoint/async_save.h"
#include "checkpoint/checkpoint.h"
#include "common/errors.h"
#include "common/logging.h"
#include "data/loader.h"
#include "model/hydra_model.h"
#include "model/model_info.h"
#include "parallel/adamw.h"
#include "parallel/flat_layout.h"
#include "parallel/grad_overlap.h"
#include "parallel/pipeline_plan.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/tensor_parallel.h"
#include "parallel/zero_optimizer.h"
#include "train/metrics.h"
#include "train/oom_message.h"
#include "train/preemption.h"
#include "train/progress.h"
#include "train/run_checks.h"
#include "train/schedule.h"

namespace hydra::train {
namespace {

using Clock = std::chrono::steady_clock;

// Everything a run holds, built once.
struct Run {
  const launcher::Config& config;
  parallel::ParallelContext& ctx;
  model::HydraModel model;
  parallel::NamedParams params;
  parallel::FlatLayout layout;
  parallel::ZeroOptimizer optim;  // AdamW, sharded over ctx.dp as parallel.zero_stage says
  checkpoint::Progress progress;
  data::DataSource data;   // data.path: the training order and the validation windows
  data::BatchSplit split;  // which rows of each global batch this rank's micro-batches take
  int64_t val_batches = 0; // global batches per evaluation (data::validation_batches)
  int micro_batch = 0;     // sequences per forward on this rank
  int accumulation = 0;    // micro-batches per step on this rank
  at::TensorOptions device;
  // Checkpoints (save/restore below): where each of `params` sits in the whole model (filled
  // on first use), the background writer of checkpoint.async, and the times to report in the
  // next metrics row.
  std::vector<model::ShardInfo> placements;
  std::unique_ptr<checkpoint::AsyncCheckpointWriter> writer = std::make_unique<checkpoint::AsyncCheckpointWriter>();
  CheckpointTimes ckpt_times;
  int steps_run = 0;  // by this process (the second logs how much of the reduction overlapped)
  RunPhase* phase = nullptr;  // where the run is, for an out-of-memory message (null: untracked)
};

void enter(Run& run, const char* what) {
  if (run.phase) run.phase->what = what;
}

parallel::NamedParams named_params(const model::HydraModel& model) {
  parallel::NamedParams out;
  for (const auto& item : model->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

// The per-rank micro-batch and the number of micro-batches per step; make_batch_split
// refuses a global batch or micro-batch that does not divide (ConfigError naming the key).
void plan_batches(Run& run) {
  const auto& t = run.config.train;
  const int dp = run.ctx.grid.shape.dp;
  const int micro = t.micro_batch > 0 ? t.micro_batch : t.global_batch / dp / run.config.parallel.micro_batches;
  run.split = data::make_batch_split(t.global_batch, micro, dp, run.ctx.grid.coord.dp);
  run.micro_batch = micro;
  run.accumulation = static_cast<int>(data::micro_batches(run.split));
}

// The validation set (docs/DATA.md): whole global batches of the val split, at most
// train.eval_batches of them.
int64_t plan_validation(const Run& run) {
  const auto& t = run.config.train;
  const int64_t batches = data::validation_batches(*run.data.val, t.eval_batches, t.global_batch);
  if (batches < t.eval_batches) {
    common::log_warn("validation: train.eval_batches %d x train.global_batch %d windows asked for, but the val split of "
                     "%s holds %lld; evaluating %lld batches (%lld windows)",
                     t.eval_batches, t.global_batch, run.config.data.path.c_str(),
                     static_cast<long long>(run.data.val->windows()), static_cast<long long>(batches),
                     static_cast<long long>(batches * t.global_batch));
  }
  return batches;
}

// With tied embeddings and several stages, the last stage's embed.weight is a copy of the
// first stage's (ParamPlacement::tied_copy, ParamSlot::duplicate).
bool has_tied_copy(const Run& run) {
  return run.config.model.tie_embeddings && run.ctx.grid.shape.pp > 1;
}

// The ZeRO optimizer of the layout, with master weights from the parameters' current values.
parallel::ZeroOptimizer make_optimizer(Run& run) {
  const auto& p = run.config.parallel;
  const int64_t bucket = std::max<int64_t>(1, std::llround(p.bucket_mb * (1 << 20) / 4));
  return parallel::make_zero_optimizer(run.layout, run.params, run.ctx.dp.get(), p.zero_stage, bucket);
}

// Gradient buckets reduced during backward (parallel/grad_overlap.h); the tied embedding's
// buckets wait for its exchange after backward.
void enable_overlap(Run& run) {
  if (!run.config.parallel.overlap_grad_reduce) return;
  std::vector<std::string> deferred;
  if (has_tied_copy(run)) deferred.push_back("embed.weight");
  parallel::zero_enable_overlap(run.optim, run.layout, run.params, deferred);
}

Run build_run(const launcher::Config& config, parallel::ParallelContext& ctx) {
  Run run{config, ctx};
  plan_batches(run);
  // The data first: a wrong path or tokenizer fails in a second, not after building a model.
  run.data = data::open_data_source(config.data, config.train.seq_len, static_cast<uint64_t>(config.train.seed));
  run.val_batches = plan_validation(run);
  const int32_t corpus_vocab = run.data.dataset->manifest().vocab_size;
  if (corpus_vocab > config.model.vocab_size) {
    HYDRA_FAIL(common::ConfigError, "model.vocab_size " << config.model.vocab_size << " is smaller than the "
                                        << corpus_vocab << " token ids of the corpus in data.path "
                                        << config.data.path << " (tokenizer " << config.data.tokenizer << ")");
  }
  at::manual_seed(config.train.seed);  // parameter init
  model::ModelOptions options;
  options.activation_checkpointing = config.train.activation_checkpointing;
  options.tp = ctx.grid.shape.tp;
  if (ctx.grid.shape.tp > 1) {  // Megatron-style tensor parallelism over ctx.tp (parallel/tensor_parallel.h)
    options.projection_factory = parallel::make_tp_projection_factory(*ctx.tp);
    options.tp_hooks = parallel::make_tp_hooks(*ctx.tp);
  }
  // Pipeline parallelism: this stage's layers (the same plan on every rank).
  const auto stages = parallel::plan_pipeline_stages(config.model, ctx.grid.shape.pp, config.parallel.pp_layers);
  options.stage = stages.at(ctx.grid.coord.pp);
  run.model = std::make_shared<model::HydraModelImpl>(config.model, options);
  run.params = named_params(run.model);
  run.layout = parallel::make_flat_layout(run.params);
  for (auto& slot : run.layout.slots) {
    const model::ParamPlacement& placed = model::placement_of(run.model->placements, slot.name);
    slot.tp_split = placed.tp_split();
    slot.duplicate = placed.tied_copy;
  }
  // Master weights come from the fp32 init, before the model is cast to its compute dtype.
  run.device = at::TensorOptions().device(config.train.device == "cuda" ? at::kCUDA : at::kCPU);
  run.model->to(run.device.device());
  run.optim = make_optimizer(run);
  if (config.train.dtype == "bf16") run.model->to(at::kBFloat16);
  run.params = named_params(run.model);  // the same names, now in the compute dtype
  enable_overlap(run);
  parallel::log_zero_memory(run.optim, run.params, ctx.grid.rank);
  if (ctx.grid.shape.pp > 1) {  // (info lines print on rank 0)
    const auto held = parallel::stage_params(config.model, stages);
    for (size_t s = 0; s < stages.size(); ++s) {
      common::log_info("pipeline: stage %zu holds layers %d..%d (%.2fM parameters)", s, stages[s].first,
                       stages[s].end - 1, held[s] / 1e6);
    }
    common::log_info("pipeline: %d micro-batches per step through %d stages, 1F1B bubble (pp - 1) / micro-batches = %.0f%%",
                     run.accumulation, ctx.grid.shape.pp, 100.0 * (ctx.grid.shape.pp - 1) / run.accumulation);
  }
  return run;
}

struct StepResult {
  double loss = 0;      // LM loss averaged over the global batch
  double aux = 0;
  double grad_norm = 0;
  bool skipped = false;
};

// The pipeline over this rank's micro-batches (one stage without pipeline parallelism):
// activations of micro_batch sequences of seq_len tokens, in the model's dtype.
parallel::PipelineSpec pipeline_spec(Run& run, int micro_batches) {
  parallel::PipelineSpec spec;
  spec.pp = run.ctx.pp.get();
  spec.micro_batches = micro_batches;
  spec.activation_shape = {run.micro_batch, run.config.train.seq_len, run.config.model.dim};
  spec.activation_options = run.device.dtype(run.params.front().second.scalar_type());
  spec.before_last_backward = [&run] { parallel::zero_arm_overlap(run.optim, run.layout, run.params); };
  return spec;
}

// The first and last stage hold the tied embedding; their gradients are summed so that both
// copies take the same step (a + b on one, b + a on the other: the same bits).
void sync_tied_embedding_grads(Run& run) {
  if (!has_tied_copy(run)) return;
  const auto& grid = run.ctx.grid;
  if (!grid.first_stage() && !grid.last_stage()) return;
  at::Tensor grad = run.model->embed.grad();
  const at::Tensor mine = grad.defined() ? grad.contiguous() : at::zeros_like(run.model->embed);
  at::Tensor other = at::empty_like(mine);
  const int peer = grid.first_stage() ? grid.shape.pp - 1 : 0;
  run.ctx.pp->exchange(mine, peer, other, peer);
  run.model->embed.mutable_grad() = mine + other;
}

StepResult train_step(Run& run, double lr) {
  const auto& t = run.config.train;
  run.model->zero_grad();
  const int dp = run.ctx.grid.shape.dp;
  const bool last_stage = run.ctx.grid.last_stage();
  // LM and aux loss sums, on the device so that the NCCL backend can average them.
  at::Tensor loss_sum = at::zeros({2}, run.device.dtype(at::kDouble));
  auto forward = [&](int micro, const at::Tensor& input) {
    enter(run, "forward");
    // The step reads samples [consumed, consumed + global_batch); run.split says which are this micro-batch's.
    const data::Batch batch =
        data::to_device(run.data.train->micro_batch(run.split, run.progress.consumed_samples, micro), run.device.device());
    model::ForwardOptions fwd;
    fwd.return_logits = false;
    const model::ModelOutput out = run.model->forward(input.defined() ? input : batch.inputs, batch.targets, fwd);
    parallel::StageForward result;
    result.output = out.hidden;
    result.loss = (last_stage ? out.loss() : out.aux_loss) / run.accumulation;
    if (micro == 0 && run.ctx.grid.rank == 0 && t.inject_nonfinite_step == run.progress.step + 1) {
      // Testing aid (train.inject_nonfinite_step): poisons this rank's gradients and its loss
      // (rank 0 may be a pipeline stage without the LM loss, or without a router).
      result.loss = result.loss * std::numeric_limits<double>::quiet_NaN();
      loss_sum[1] += std::numeric_limits<double>::quiet_NaN();
    }
    if (last_stage) loss_sum[0] += out.lm_loss.detach().to(at::kDouble) / run.accumulation;
    loss_sum[1] += out.aux_loss.detach().to(at::kDouble) / run.accumulation;
    enter(run, "backward");  // what the schedule runs next, unless another forward
    return result;
  };
  parallel::run_1f1b(pipeline_spec(run, run.accumulation), forward);
  enter(run, "gradient reduction and optimizer step");
  sync_tied_embedding_grads(run);
  // The LM loss lives on the last stage, aux losses on every stage: their sum over stages.
  if (run.ctx.grid.shape.pp > 1) run.ctx.pp->all_reduce(loss_sum, parallel::ReduceOp::kSum);
  // Averaged over dp (all-reduce or reduce-scatter by ZeRO stage); this rank keeps its part.
  parallel::zero_reduce_gradients(run.optim, run.layout, run.params);
  // The first step learns how often each gradient accumulator fires (grad_overlap.h); the
  // second is the first to overlap.
  if (run.optim.overlap && ++run.steps_run == 2) {
    const parallel::OverlapStats o = parallel::overlap_stats(run.optim);
    common::log_info("overlap: %d of %d gradient buckets were reduced during backward", o.issued_during_backward,
                     o.buckets);
  }
  if (dp > 1) run.ctx.dp->all_reduce(loss_sum, parallel::ReduceOp::kAvg);
  StepResult r;
  r.loss = loss_sum[0].item<double>();
  r.aux = loss_sum[1].item<double>();
  // Collective: the same value on every rank, so the skip/halt decision below is too.
  r.grad_norm = parallel::zero_grad_norm(run.optim, run.layout, run.ctx.tp.get(), run.ctx.pp.get());
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm)) {
    if (t.on_nonfinite == "halt") {
      HYDRA_FAIL(common::RuntimeFailure, "non-finite loss " << r.loss << " or gradient norm " << r.grad_norm
                                             << " at step " << run.progress.step + 1
                                             << " (train.on_nonfinite: halt)");
    }
    r.skipped = true;
    return r;
  }
  if (t.clip > 0 && r.grad_norm > t.clip) parallel::zero_scale_gradients(run.optim, t.clip / (r.grad_norm + 1e-6));
  parallel::AdamWHyper hyper{lr, t.beta1, t.beta2, t.eps, t.weight_decay};
  parallel::zero_step(run.optim, run.layout, run.params, hyper);
  return r;
}

// Validation loss in causal routing mode over the run's validation windows (run.val_batches
// global batches, split over dp ranks and micro-batches as in training): the mean over
// equal-sized micro-batches, i.e. over the windows, the same for every layout. With pipeline
// stages the micro-batches pass the stages in order and the last stage scores them.
double evaluate(Run& run) {
  enter(run, "evaluation");
  at::Tensor totals = at::zeros({2}, run.device.dtype(at::kDouble));  // loss sum, micro-batches
  const bool last_stage = run.ctx.grid.last_stage();
  auto forward = [&](int i, const at::Tensor& input) {
    const data::Batch batch = data::to_device(
        run.data.val->micro_batch(run.split, i / run.accumulation, i % run.accumulation), run.device.device());
    model::ForwardOptions fwd;
    fwd.causal_routing = true;
    fwd.return_logits = false;
    const model::ModelOutput out = run.model->forward(input.defined() ? input : batch.inputs, batch.targets, fwd);
    if (last_stage) {
      totals[0] += out.lm_loss.to(at::kDouble);
      totals[1] += 1.0;
    }
    return parallel::StageForward{out.hidden, {}};
  };
  parallel::run_forward_only(pipeline_spec(run, static_cast<int>(run.val_batches) * run.accumulation), forward);
  if (run.ctx.grid.shape.pp > 1) run.ctx.pp->all_reduce(totals, parallel::ReduceOp::kSum);
  if (run.ctx.grid.shape.dp > 1) run.ctx.dp->all_reduce(totals, parallel::ReduceOp::kSum);
  totals = totals.cpu();
  return totals[0].item<double>() / std::max(1.0, totals[1].item<double>());
}

// Where each parameter of this rank sits in the whole model, for checkpoints, in the order of
// run.params (the model recorded them as it built them; the tied copy is not stored).
const std::vector<model::ShardInfo>& placements(Run& run) {
  if (run.placements.size() != run.params.size()) {
    run.placements.clear();
    for (const auto& item : run.params) {
      run.placements.push_back(model::placement_of(run.model->placements, item.first).shard);
    }
  }
  return run.placements;
}

parallel::Communicator* world_of(Run& run) { return run.ctx.grid.shape.world() > 1 ? run.ctx.world.get() : nullptr; }

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Commits a pending checkpoint.async save (collective: every rank has one pending at the same
// points). The wait for the writer thread and the commit count as a stall of the loop.
std::string finish_async_save(Run& run) {
  if (!run.writer->pending()) return "";
  const auto start = Clock::now();
  const checkpoint::AsyncCheckpointWriter::Finished done = run.writer->finish(world_of(run));
  const double stall = ms_since(start);
  run.ckpt_times.stall_ms = run.ckpt_times.stall_ms.value_or(0) + stall;
  run.ckpt_times.write_ms = done.write_ms;
  common::log_info("checkpoint: saved %s (written in the background in %.2f s; the loop waited %.1f ms for it)",
                   done.dir.c_str(), done.write_ms / 1e3, stall);
  return done.dir;
}

// Saves at this step boundary. checkpoint.async: commits the previous save, copies the state
// to host memory and leaves the file to a background thread; otherwise writes and commits
// now. Returns the directory (committed, or to be committed by finish_async_save).
std::string save(Run& run, const std::string& config_text) {
  enter(run, "checkpoint save");
  checkpoint::SaveRequest req;
  req.root = run.config.checkpoint.dir;
  req.keep = run.config.checkpoint.keep;
  req.progress = run.progress;
  req.config_yaml = config_text;
  const auto& shape = run.ctx.grid.shape;
  req.layout = {{"world", shape.world()}, {"dp", shape.dp}, {"tp", shape.tp}, {"pp", shape.pp},
                {"zero_stage", run.config.parallel.zero_stage}, {"micro_batches", run.config.parallel.micro_batches}};
  req.rank = run.ctx.grid.rank;
  req.world = shape.world();
  req.write_weights = run.ctx.grid.coord.dp == 0;
  req.placements = placements(run);
  std::vector<const parallel::AdamWState*> states = parallel::zero_states(std::as_const(run.optim));
  // ZeRO stage 0: every dp rank holds the whole state; dp rank 0's copy is stored.
  if (run.optim.stage == 0 && run.ctx.grid.coord.dp != 0) states.clear();
  if (run.config.checkpoint.async) {
    finish_async_save(run);
    const auto start = Clock::now();
    const std::string dir = run.writer->start(req, run.params, run.layout, states, world_of(run));
    const double stall = ms_since(start);
    run.ckpt_times.stall_ms = run.ckpt_times.stall_ms.value_or(0) + stall;
    run.ckpt_times.copy_ms = run.ckpt_times.copy_ms.value_or(0) + stall;
    common::log_info("checkpoint: %s copied to host in %.1f ms, writing in the background", dir.c_str(), stall);
    return dir;
  }
  common::log_info("checkpoint: saving step %lld (training waits; checkpoint.async: true writes in the background)",
                   static_cast<long long>(run.progress.step));
  const auto start = Clock::now();
  const std::string dir = checkpoint::save_checkpoint(req, run.params, run.layout, states, world_of(run));
  const double took = ms_since(start);
  run.ckpt_times.stall_ms = run.ckpt_times.stall_ms.value_or(0) + took;
  run.ckpt_times.write_ms = took;
  common::log_info("checkpoint: saved %s in %.2f s", dir.c_str(), took / 1e3);
  return dir;
}

// Loads `dir` on every rank; true only if it loaded on all of them (one collective), so that
// no rank continues from a checkpoint another rank could not read.
bool load_everywhere(Run& run, const std::string& dir, checkpoint::LoadedCheckpoint& out, std::string& problem) {
  try {
    // Whatever dp, tp, pp or ZeRO stage wrote it: each rank reads the parts that overlap its own.
    common::log_info("resume: loading %s", dir.c_str());  // a large model takes a while: say what
    const auto start = Clock::now();
    out = checkpoint::load_checkpoint(dir, run.params, run.layout, parallel::zero_states(run.optim), placements(run));
    run.ckpt_times.load_ms = ms_since(start);
  } catch (const common::InputError& e) {
    problem = e.what();
  }
  if (run.ctx.grid.shape.world() == 1) return problem.empty();
  at::Tensor failed = at::full({1}, problem.empty() ? 0.0 : 1.0, run.device.dtype(at::kFloat));
  run.ctx.world->all_reduce(failed, parallel::ReduceOp::kMax);
  if (failed.cpu().item<float>() > 0.5f && problem.empty()) problem = "it could not be read on another rank";
  return problem.empty();
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
        const double seconds = run.ckpt_times.load_ms.value_or(0) / 1e3;
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
    checkpoint::load_checkpoint(*request.init_from, run.params, run.layout, nullptr, placements(run));
    run.optim = make_optimizer(run);
    enable_overlap(run);
    common::log_info("init-from: weights of %s (fresh optimizer and data position)", request.init_from->c_str());
  }
}

RunResult train_run(const launcher::Config& config, parallel::ParallelContext& ctx, const RunRequest& request,
                    RunPhase& phase) {
  install_preemption_handlers();  // before the first step: a signal during setup counts too
  // Outputs and resume settings first: a wrong path fails in a second, not at the first save.
  const EarlierRun earlier = check_run_start(config, request, ctx);
  Run run = build_run(config, ctx);
  run.phase = &phase;
  phase.micro_batch = run.micro_batch;
  restore(run, request);
  if (request.overwrite) set_aside_earlier_run(config, earlier, ctx);  // after --init-from read its checkpoint
  const auto& t = config.train;
  const Schedule schedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  const model::ModelStats stats = model::compute_model_stats(config.model, t.seq_len, ctx.grid.shape.tp);
  MetricsFile metrics(ctx.grid.rank == 0 ? config.log.jsonl : "", static_cast<int>(run.progress.step));
  ProgressLine progress_line(t.steps, static_cast<int>(run.progress.step), config.train.device == "cuda");
  common::log_info("model: %.2fM parameters, %d effective layers; batch %d x %d tokens (%d per rank x %d micro-batches)",
                   stats.params_total / 1e6, stats.effective_layers, t.global_batch, t.seq_len, run.micro_batch,
                   run.accumulation);

  RunResult result;
  const int64_t tokens_per_step = static_cast<int64_t>(t.global_batch) * t.seq_len;
  auto window_start = Clock::now();
  int window_steps = 0;
  const int64_t first_step = run.progress.step + 1;  // of this process: logged at once (includes warm-up)
  while (run.progress.step < t.steps) {
    phase.step = run.progress.step + 1;
    const double lr = lr_at(schedule, static_cast<int>(run.progress.step));
    const StepResult step = train_step(run, lr);
    run.progress.step += 1;
    run.progress.consumed_samples += t.global_batch;
    run.progress.tokens += tokens_per_step;
    run.progress.skipped += step.skipped ? 1 : 0;
    if (step.skipped) {
      common::log_warn("step %lld: non-finite loss or gradient, step skipped", static_cast<long long>(run.progress.step));
    }
    ++window_steps;
    result.last_loss = step.loss;
    const bool stop_here = t.stop_at_step > 0 && run.progress.step == t.stop_at_step;
    const bool last = run.progress.step == t.steps || stop_here;
    const bool eval_now = last || (t.eval_every > 0 && run.progress.step % t.eval_every == 0);
    const bool log_now =
        last || eval_now || run.progress.step == first_step || run.progress.step % config.log.every == 0;
    if (log_now) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      StepMetrics row;
      row.step = static_cast<int>(run.progress.step);
      row.loss = step.loss;
      row.aux_loss = step.aux;
      row.lr = lr;
      row.grad_norm = step.grad_norm;
      row.tokens = run.progress.tokens;
      row.tok_s = window_steps * tokens_per_step / std::max(seconds, 1e-9);
      if (config.train.device == "cuda") row.mfu = row.tok_s * stats.flops_per_token / (989e12 * ctx.grid.shape.world());
      row.skipped = static_cast<int>(run.progress.skipped);
      row.mem_gb = memory_in_use_bytes(config.train.device == "cuda") / 1e9;
      if (eval_now) row.val_loss = evaluate(run), result.last_val_loss = row.val_loss;
      row.checkpoint = std::exchange(run.ckpt_times, {});
      metrics.write(row);
      progress_line.print(row);
      window_start = Clock::now();
      window_steps = 0;
    }
    const bool save_now = last || (config.checkpoint.every > 0 && run.progress.step % config.checkpoint.every == 0);
    if (save_now) result.last_checkpoint = save(run, request.config_text);
    // SIGTERM/SIGUSR1 on any rank: all ranks agree at this step boundary, save, exit 75.
    if (preemption_agreed(world_of(run), run.device)) {
      if (!save_now) result.last_checkpoint = save(run, request.config_text);
      finish_async_save(run);
      HYDRA_FAIL(common::Preempted, "preempted by a signal at step " << run.progress.step << "; checkpoint "
                                        << result.last_checkpoint << " saved; continue with --resume latest");
    }
    if (stop_here) {
      common::log_info("train: stopped at step %d (train.stop_at_step); continue with --resume latest", t.stop_at_step);
      break;
    }
  }
  finish_async_save(run);  // the last save is committed before the run reports it
  result.steps_done = static_cast<int>(run.progress.step);
  return result;
}

}  // namespace

RunResult run_training(const launcher::Config& config, parallel::ParallelContext& ctx, const RunRequest& request) {
  RunPhase phase;
  try {
    return train_run(config, ctx, request, phase);
  } catch (const c10::OutOfMemoryError& e) {  // (LibTorch 1.13 and 2.x); its what() carries a stack trace
    const auto& t = config.train;
    const MemoryKnobs knobs{phase.micro_batch > 0 ? phase.micro_batch : t.micro_batch, t.seq_len,
                            t.activation_checkpointing, config.parallel.zero_stage};
    HYDRA_FAIL(common::RuntimeFailure, out_of_memory_message(phase, knobs, e.what_without_backtrace()));
  }
}

double run_evaluation(const launcher::Config& config, parallel::ParallelContext& ctx, const std::string& dir) {
  Run run = build_run(config, ctx);
  checkpoint::load_checkpoint(dir, run.params, run.layout, nullptr, placements(run));
  const double loss = evaluate(run);
  common::log_info("eval: %s val_loss %.4f perplexity %.2f (%d batches)", dir.c_str(), loss, std::exp(loss),
                   static_cast<int>(run.val_batches));
  return loss;
}

}  // namespace hydra::train
