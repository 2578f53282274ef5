#include "train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "checkpoint/checkpoint.h"
#include "common/errors.h"
#include "common/logging.h"
#include "model/hydra_model.h"
#include "model/model_info.h"
#include "parallel/adamw.h"
#include "parallel/flat_layout.h"
#include "parallel/tensor_parallel.h"
#include "parallel/zero_optimizer.h"
#include "train/batches.h"
#include "train/metrics.h"
#include "train/preemption.h"
#include "train/progress.h"
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
  BatchSource batches;
  int micro_batch = 0;     // sequences per forward on this rank
  int accumulation = 0;    // micro-batches per step on this rank
  at::TensorOptions device;
};

parallel::NamedParams named_params(const model::HydraModel& model) {
  parallel::NamedParams out;
  for (const auto& item : model->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

// The per-rank micro-batch and the number of micro-batches per step.
void plan_batches(Run& run) {
  const auto& t = run.config.train;
  const int dp = run.ctx.grid.shape.dp;
  if (t.global_batch % dp != 0) {
    HYDRA_FAIL(common::ConfigError, "train.global_batch " << t.global_batch << " is not divisible by the "
                                        << dp << " data-parallel ranks");
  }
  const int per_rank = t.global_batch / dp;
  run.micro_batch = t.micro_batch > 0 ? t.micro_batch : per_rank / run.config.parallel.micro_batches;
  if (run.micro_batch < 1 || per_rank % run.micro_batch != 0) {
    HYDRA_FAIL(common::ConfigError, "train.micro_batch " << run.micro_batch << " must divide the "
                                        << per_rank << " sequences each data-parallel rank takes per step"
                                        << " (train.global_batch / dp)");
  }
  run.accumulation = per_rank / run.micro_batch;
}

Run build_run(const launcher::Config& config, parallel::ParallelContext& ctx) {
  Run run{config, ctx};
  plan_batches(run);
  // The data first: a wrong path or tokenizer fails in a second, not after building a model.
  run.batches = open_batches(config.data, config.train.seq_len, config.train.seed);
  if (run.batches.vocab_size > config.model.vocab_size) {
    HYDRA_FAIL(common::ConfigError, "model.vocab_size " << config.model.vocab_size << " is smaller than the "
                                        << run.batches.vocab_size << " token ids of the corpus in data.path "
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
  run.model = std::make_shared<model::HydraModelImpl>(config.model, options);
  run.params = named_params(run.model);
  run.layout = parallel::make_flat_layout(run.params);
  for (auto& slot : run.layout.slots) slot.tp_split = run.model->tp_split(slot.name);
  // Master weights come from the fp32 init, before the model is cast to its compute dtype.
  run.device = at::TensorOptions().device(config.train.device == "cuda" ? at::kCUDA : at::kCPU);
  run.model->to(run.device.device());
  run.optim = parallel::make_zero_optimizer(run.layout, run.params, ctx.dp.get(), config.parallel.zero_stage);
  if (config.train.dtype == "bf16") run.model->to(at::kBFloat16);
  run.params = named_params(run.model);  // the same names, now in the compute dtype
  parallel::log_zero_memory(run.optim, run.params, ctx.grid.rank);
  return run;
}

struct StepResult {
  double loss = 0;      // LM loss averaged over the global batch
  double aux = 0;
  double grad_norm = 0;
  bool skipped = false;
};

StepResult train_step(Run& run, double lr) {
  const auto& t = run.config.train;
  run.model->zero_grad();
  const int dp = run.ctx.grid.shape.dp;
  const int dp_rank = run.ctx.grid.coord.dp;
  // LM and aux loss sums, on the device so that the NCCL backend can average them.
  at::Tensor loss_sum = at::zeros({2}, run.device.dtype(at::kDouble));
  for (int micro = 0; micro < run.accumulation; ++micro) {
    // Global sample order: micro-batch m of dp rank r takes the samples
    // consumed + (m * dp + r) * micro_batch ...: independent of how the step is split.
    const int64_t first = run.progress.consumed_samples + (static_cast<int64_t>(micro) * dp + dp_rank) * run.micro_batch;
    const Batch batch = run.batches.train(first, run.micro_batch, run.device);
    model::ForwardOptions fwd;
    fwd.return_logits = false;
    const model::ModelOutput out = run.model->forward(batch.inputs, batch.targets, fwd);
    at::Tensor loss = out.loss() / run.accumulation;
    if (micro == 0 && run.ctx.grid.rank == 0 && t.inject_nonfinite_step == run.progress.step + 1) {
      loss = loss * std::numeric_limits<double>::quiet_NaN();  // testing aid (train.inject_nonfinite_step)
    }
    loss.backward();
    loss_sum[0] += out.lm_loss.detach().to(at::kDouble) / run.accumulation;
    loss_sum[1] += out.aux_loss.detach().to(at::kDouble) / run.accumulation;
  }
  // Averaged over dp (all-reduce or reduce-scatter by ZeRO stage); this rank keeps its part.
  parallel::zero_reduce_gradients(run.optim, run.layout, run.params);
  if (dp > 1) run.ctx.dp->all_reduce(loss_sum, parallel::ReduceOp::kAvg);
  StepResult r;
  r.loss = loss_sum[0].item<double>();
  r.aux = loss_sum[1].item<double>();
  // Collective: the same value on every rank, so the skip/halt decision below is too.
  r.grad_norm = parallel::zero_grad_norm(run.optim, run.layout, run.ctx.tp.get());
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

// Validation loss in causal routing mode over train.eval_batches batches, averaged over dp.
double evaluate(Run& run) {
  c10::NoGradGuard no_grad;
  const auto& t = run.config.train;
  double sum = 0;
  int count = 0;
  for (int b = run.ctx.grid.coord.dp; b < t.eval_batches; b += run.ctx.grid.shape.dp) {
    const Batch batch = run.batches.validation(b, run.micro_batch, run.device);
    model::ForwardOptions fwd;
    fwd.causal_routing = true;
    fwd.return_logits = false;
    sum += run.model->forward(batch.inputs, batch.targets, fwd).lm_loss.item<double>();
    ++count;
  }
  at::Tensor totals = at::tensor({sum, static_cast<double>(count)}, at::kDouble).to(run.device.device());
  if (run.ctx.grid.shape.dp > 1) run.ctx.dp->all_reduce(totals, parallel::ReduceOp::kSum);
  totals = totals.cpu();
  return totals[0].item<double>() / std::max(1.0, totals[1].item<double>());
}

checkpoint::TpPosition tp_position(const Run& run) {
  return {run.ctx.grid.shape.tp, run.ctx.grid.coord.tp};
}

std::string save(Run& run, const std::string& config_text) {
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
  const auto start = Clock::now();
  const std::string dir = checkpoint::save_checkpoint(req, run.params, run.layout,
                                                      parallel::zero_states(std::as_const(run.optim)),
                                                      shape.world() > 1 ? run.ctx.world.get() : nullptr);
  common::log_info("checkpoint: saved %s in %.2f s", dir.c_str(),
                   std::chrono::duration<double>(Clock::now() - start).count());
  return dir;
}

// Loads `dir` on every rank; true only if it loaded on all of them (one collective), so that
// no rank continues from a checkpoint another rank could not read.
bool load_everywhere(Run& run, const std::string& dir, checkpoint::LoadedCheckpoint& out, std::string& problem) {
  try {
    // Every rank assembles its optimizer part from the pieces of any dp size or ZeRO stage.
    out = checkpoint::load_checkpoint(dir, run.params, run.layout, parallel::zero_states(run.optim), tp_position(run));
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
        common::log_info("resume: %s at step %lld, %lld samples consumed", dir.c_str(),
                         static_cast<long long>(ckpt.progress.step),
                         static_cast<long long>(ckpt.progress.consumed_samples));
        return;
      }
      if (*request.resume != "latest") HYDRA_FAIL(common::InputError, problem);
      common::log_warn("resume: skipping %s: %s; trying the previous checkpoint", dir.c_str(), problem.c_str());
    }
    HYDRA_FAIL(common::InputError, "resume: none of the " << candidates.size() << " complete checkpoints under "
                                       << run.config.checkpoint.dir << " could be loaded (see the warnings above)");
  } else if (request.init_from) {
    checkpoint::load_checkpoint(*request.init_from, run.params, run.layout, nullptr, tp_position(run));
    run.optim = parallel::make_zero_optimizer(run.layout, run.params, run.ctx.dp.get(), run.config.parallel.zero_stage);
    common::log_info("init-from: weights of %s (fresh optimizer and data position)", request.init_from->c_str());
  }
}

}  // namespace

RunResult run_training(const launcher::Config& config, parallel::ParallelContext& ctx, const RunRequest& request) {
  install_preemption_handlers();  // before the first step: a signal during setup counts too
  Run run = build_run(config, ctx);
  restore(run, request);
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
  while (run.progress.step < t.steps) {
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
    const bool log_now = last || eval_now || run.progress.step % config.log.every == 0;
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
      if (eval_now) row.val_loss = evaluate(run), result.last_val_loss = row.val_loss;
      metrics.write(row);
      progress_line.print(row);
      window_start = Clock::now();
      window_steps = 0;
    }
    const bool save_now = last || (config.checkpoint.every > 0 && run.progress.step % config.checkpoint.every == 0);
    if (save_now) result.last_checkpoint = save(run, request.config_text);
    // SIGTERM/SIGUSR1 on any rank: all ranks agree at this step boundary, save, exit 75.
    if (preemption_agreed(ctx.grid.shape.world() > 1 ? ctx.world.get() : nullptr, run.device)) {
      if (!save_now) result.last_checkpoint = save(run, request.config_text);
      HYDRA_FAIL(common::Preempted, "preempted by a signal at step " << run.progress.step << "; checkpoint "
                                        << result.last_checkpoint << " saved; continue with --resume latest");
    }
    if (stop_here) {
      common::log_info("train: stopped at step %d (train.stop_at_step); continue with --resume latest", t.stop_at_step);
      break;
    }
  }
  result.steps_done = static_cast<int>(run.progress.step);
  return result;
}

double run_evaluation(const launcher::Config& config, parallel::ParallelContext& ctx, const std::string& dir) {
  Run run = build_run(config, ctx);
  checkpoint::load_checkpoint(dir, run.params, run.layout, nullptr, tp_position(run));
  const double loss = evaluate(run);
  common::log_info("eval: %s val_loss %.4f perplexity %.2f (%d batches)", dir.c_str(), loss, std::exp(loss),
                   config.train.eval_batches);
  return loss;
}

}  // namespace hydra::train
