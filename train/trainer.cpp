#include "train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "common/errors.h"
#include "common/logging.h"
#include "data/loader.h"
#include "model/hydra_model.h"
#include "model/model_info.h"
#include "model/sharding.h"
#include "parallel/adamw.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/flat_layout.h"
#include "parallel/pipeline_plan.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_tied.h"
#include "parallel/tensor_parallel.h"
#include "train/device_memory.h"
#include "train/device_peak.h"
#include "train/frozen_params.h"
#include "train/memory_estimate.h"
#include "train/metrics.h"
#include "train/oom_message.h"
#include "train/preemption.h"
#include "train/progress.h"
#include "train/run.h"
#include "train/run_checkpoints.h"
#include "train/run_checks.h"
#include "train/schedule.h"
#include "train/step_bench.h"
#include "train/step_numbers.h"
#include "train/step_update.h"

namespace hydra::train {
namespace {

using Clock = std::chrono::steady_clock;

// The per-rank micro-batch and the number of micro-batches per step; make_batch_split
// refuses a global batch or micro-batch that does not divide (ConfigError naming the key).
BatchPlan plan_batches(const RunConfig& config, const parallel::ProcessGrid& grid) {
  const auto& t = config.train;
  const int dp = grid.shape.dp;
  BatchPlan plan;
  plan.micro_batch = per_rank_micro_batch(config, dp);
  plan.split = data::make_batch_split(t.global_batch, plan.micro_batch, dp, grid.coord.dp);
  plan.accumulation = static_cast<int>(data::micro_batches(plan.split));
  return plan;
}

// The validation set (docs/DATA.md): whole global batches of the val split, at most
// train.eval_batches of them.
int64_t plan_validation(const RunConfig& config, const data::DataSource& data) {
  const auto& t = config.train;
  const int64_t batches = data::validation_batches(*data.val, t.eval_batches, t.global_batch);
  if (batches < t.eval_batches) {
    common::log_warn("validation: train.eval_batches %d x train.global_batch %d windows asked for, but the val split of "
                     "%s holds %lld; evaluating %lld batches (%lld windows)",
                     t.eval_batches, t.global_batch, config.data.path.c_str(),
                     static_cast<long long>(data.val->windows()), static_cast<long long>(batches),
                     static_cast<long long>(batches * t.global_batch));
  }
  return batches;
}

void check_vocab(const RunConfig& config, const data::DataSource& data) {
  const int32_t corpus_vocab = data.dataset->manifest().vocab_size;
  if (corpus_vocab > config.model.vocab_size) {
    HYDRA_FAIL(common::ConfigError, "model.vocab_size " << config.model.vocab_size << " is smaller than the "
                                        << corpus_vocab << " token ids of the corpus in data.path "
                                        << config.data.path << " (tokenizer " << config.data.tokenizer << ")");
  }
}

// Whether the first and last stage sum the tied embedding's gradients: it has a copy on the
// last stage, and it trains (both stages agree: they freeze by name).
bool tied_exchange(const RunConfig& config, const parallel::ParallelContext& ctx, const model::HydraModelImpl& model) {
  return parallel::has_tied_copy(config.model.tie_embeddings, ctx.grid) &&
         (!model.embed.defined() || model.embed.requires_grad());
}

// This stage's part of the model (fp32 init from train.seed, on the run's device).
model::HydraModel build_model(const RunConfig& config, parallel::ParallelContext& ctx,
                              const std::vector<model::StageLayers>& stages, const at::TensorOptions& device) {
  at::manual_seed(config.train.seed);  // parameter init
  model::ModelOptions options;
  options.activation_checkpointing = config.train.activation_checkpointing;
  options.tp = ctx.grid.shape.tp;
  if (ctx.grid.shape.tp > 1) {  // Megatron-style tensor parallelism over ctx.tp (parallel/tensor_parallel.h)
    options.projection_factory = parallel::make_tp_projection_factory(*ctx.tp);
    options.tp_hooks = parallel::make_tp_hooks(*ctx.tp);
  }
  options.stage = stages.at(ctx.grid.coord.pp);
  model::HydraModel model = std::make_shared<model::HydraModelImpl>(config.model, options);
  model->to(device.device());
  return model;
}

// The data-parallel optimizer of `model`'s trainable parameters (train.freeze leaves the rest
// out): their fp32 values become the master weights, then it casts the model to train.dtype
// and hooks the gradient overlap (parallel/data_parallel_optimizer.h).
parallel::DataParallelOptimizer build_optimizer(const RunConfig& config, parallel::ParallelContext& ctx,
                                                model::HydraModel& model) {
  parallel::NamedParams params;
  for (const auto& item : model->named_parameters()) {
    if (item.value().requires_grad()) params.emplace_back(item.key(), item.value());
  }
  parallel::FlatLayout layout = parallel::make_flat_layout(params);
  for (auto& slot : layout.slots) {
    const model::ParamPlacement& placed = model::placement_of(model->placements, slot.name);
    slot.tp_split = placed.tp_split();
    slot.duplicate = placed.tied_copy;
  }
  const auto& p = config.parallel;
  parallel::DataParallelOptions options;
  options.zero_stage = p.zero_stage;
  options.bucket_numel = std::max<int64_t>(1, std::llround(p.bucket_mb * (1 << 20) / 4));
  options.overlap = p.overlap_grad_reduce;
  // The tied embedding's buckets wait for its exchange after backward.
  if (tied_exchange(config, ctx, *model)) options.deferred.push_back("embed.weight");
  options.compute_dtype = config.train.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  return parallel::DataParallelOptimizer(*model, std::move(layout), ctx.dp.get(), options);
}

void log_pipeline(const Run& run, const std::vector<model::StageLayers>& stages) {
  if (run.ctx.grid.shape.pp == 1) return;  // (info lines print on rank 0)
  const auto held = parallel::stage_params(run.config.model, stages);
  for (size_t s = 0; s < stages.size(); ++s) {
    common::log_info("pipeline: stage %zu holds layers %d..%d (%.2fM parameters)", s, stages[s].first,
                     stages[s].end - 1, held[s] / 1e6);
  }
  const int pp = run.ctx.grid.shape.pp, micro = run.batches.accumulation;
  common::log_info("pipeline: %d micro-batches per step through %d stages, 1F1B bubble (pp - 1) / micro-batches = %.0f%%",
                   micro, pp, 100.0 * (pp - 1) / micro);
}

Run build_run(const RunConfig& config, parallel::ParallelContext& ctx) {
  const bool graphs = use_cuda_graphs(config, ctx);  // (train.cuda_graphs: on where it cannot fails here)
  BatchPlan batches = plan_batches(config, ctx.grid);
  // The data first: a wrong path or tokenizer fails in a second, not after building a model.
  const auto seed = static_cast<uint64_t>(config.train.seed);
  data::DataSource data = data::open_data_source(config.data, config.train.seq_len, seed);
  batches.val_batches = plan_validation(config, data);
  check_vocab(config, data);
  // Pipeline parallelism: this stage's layers (the same plan on every rank).
  const auto stages = parallel::plan_pipeline_stages(config.model, ctx.grid.shape.pp, config.parallel.pp_layers);
  const auto device = at::TensorOptions().device(config.train.device == "cuda" ? at::kCUDA : at::kCPU);
  model::HydraModel model = build_model(config, ctx, stages, device);
  // Before the optimizer, which takes the parameters that still require a gradient.
  const FreezeCounts frozen = freeze_parameters(config.source, config.train.freeze, *model, ctx, device);
  parallel::DataParallelOptimizer optim = build_optimizer(config, ctx, model);
  StepInputs inputs = make_step_inputs(batches.accumulation, batches.micro_batch, config.train.seq_len, device.device());
  Run run{config, ctx, std::move(batches), std::move(data), device, std::move(model), std::move(optim),
          std::move(inputs)};
  run.frozen = frozen;
  if (graphs) run.graph = std::make_unique<StepGraph>();
  run.optim.log_memory(ctx.grid.rank);
  if (config.train.device == "cuda") {
    const StageMemory predicted = estimate_memory(config, ctx.grid.shape).stages.at(ctx.grid.coord.pp);
    common::log_info("memory: predicted peak %.2f GB per GPU (activations %.2f GB; docs/MODEL.md \"Memory\")",
                     predicted.peak() / 1e9, predicted.activations / 1e9);
    const auto& t = config.train;
    const MemoryKnobs knobs{run.batches.micro_batch, t.seq_len, t.activation_checkpointing, config.parallel.zero_stage};
    const std::string warning =
        predicted_memory_warning(static_cast<double>(predicted.peak()), device_total_bytes(true), knobs);
    if (!warning.empty()) common::log_warn("memory: %s", warning.c_str());
  }
  log_pipeline(run, stages);
  return run;
}

// The pipeline over this rank's micro-batches (one stage without pipeline parallelism):
// activations of micro_batch sequences of seq_len tokens, in the model's dtype.
parallel::PipelineSpec pipeline_spec(Run& run, int micro_batches) {
  parallel::PipelineSpec spec;
  spec.pp = run.ctx.pp.get();
  spec.micro_batches = micro_batches;
  spec.activation_shape = {run.batches.micro_batch, run.config.train.seq_len, run.config.model.dim};
  spec.activation_options = run.device.dtype(run.model->parameters().front().scalar_type());
  spec.before_last_backward = [&run] { run.optim.arm_overlap(); };
  return spec;
}

// Forward and backward of this rank's micro-batches (through the pipeline stages): gradients
// accumulate in .grad, the last one's reduction starts during its backward. Returns this
// rank's LM and aux loss sums, on the device so that the NCCL backend can average them.
at::Tensor forward_backward(Run& run) {
  const auto& t = run.config.train;
  const BatchPlan& plan = run.batches;
  const bool last_stage = run.ctx.grid.last_stage();
  at::Tensor loss_sum = at::zeros({2}, run.device.dtype(at::kDouble));
  auto forward = [&](int micro, const at::Tensor& input) {
    enter(run, "forward");
    const data::Batch& batch = run.inputs.micro_batches.at(micro);
    model::ForwardOptions fwd;
    fwd.return_logits = false;
    const model::ModelOutput out = run.model->forward(input.defined() ? input : batch.inputs, batch.targets, fwd);
    parallel::StageForward result;
    result.output = out.hidden;
    result.loss = (last_stage ? out.loss() : out.aux_loss) / plan.accumulation;
    if (micro == 0 && run.ctx.grid.rank == 0 && t.inject_nonfinite_step == run.progress.step + 1) {
      // Testing aid (train.inject_nonfinite_step): poisons this rank's gradients and its loss
      // (rank 0 may be a pipeline stage without the LM loss, or without a router).
      result.loss = result.loss * std::numeric_limits<double>::quiet_NaN();
      loss_sum[1] += std::numeric_limits<double>::quiet_NaN();
    }
    if (last_stage) loss_sum[0] += out.lm_loss.detach().to(at::kDouble) / plan.accumulation;
    loss_sum[1] += out.aux_loss.detach().to(at::kDouble) / plan.accumulation;
    enter(run, "backward");  // what the schedule runs next, unless another forward
    return result;
  };
  parallel::run_1f1b(pipeline_spec(run, plan.accumulation), forward);
  return loss_sum;
}

// The gradients and the losses of the whole step: the tied embedding's two copies summed,
// gradients averaged over dp (this rank keeps its part), losses summed over stages (the LM
// loss lives on the last, aux losses on every stage) and averaged over dp.
void reduce_step(Run& run, at::Tensor& loss_sum) {
  if (tied_exchange(run.config, run.ctx, *run.model)) {
    parallel::sum_tied_embedding_grads(run.model->embed, run.ctx.grid, *run.ctx.pp);
  }
  if (run.ctx.grid.shape.pp > 1) run.ctx.pp->all_reduce(loss_sum, parallel::ReduceOp::kSum);
  run.optim.reduce_gradients();
  // The first step learns how often each gradient accumulator fires (grad_overlap.h); the
  // second is the first to overlap.
  if (run.optim.overlapping() && ++run.steps_run == 2) {
    const parallel::OverlapStats o = run.optim.overlap_stats();
    common::log_info("overlap: %d of %d gradient buckets were reduced during backward", o.issued_during_backward,
                     o.buckets);
  }
  if (run.ctx.grid.shape.dp > 1) run.ctx.dp->all_reduce(loss_sum, parallel::ReduceOp::kAvg);
}

// One step on the inputs in run.inputs, queued without reading anything on the host
// (train/step_update.h): returns the step's numbers on the device (train/step_numbers.h).
// What it does on the host is the same every step, so that it can be captured (step_graph.h).
at::Tensor train_step(Run& run) {
  const auto& t = run.config.train;
  run.optim.zero_grad();  // dropped: backward makes them afresh
  at::Tensor loss_sum = forward_backward(run);
  enter(run, "gradient reduction and optimizer step");
  reduce_step(run, loss_sum);
  return update_step(run.optim, run.ctx, loss_sum,
                     parallel::AdamWHyper{run.inputs.lr, t.beta1, t.beta2, t.eps, t.weight_decay}, t.clip);
}

// The next step at learning rate `lr`: its samples [consumed, consumed + global_batch) (this
// rank's micro-batches as plan.split says) and the rate into the step's inputs, then the step,
// eager or replayed. Returns its numbers on the device, to be read (copied) before the next step.
at::Tensor run_step(Run& run, double lr) {
  const BatchPlan& plan = run.batches;
  std::vector<data::Batch> host;
  for (int micro = 0; micro < plan.accumulation; ++micro) {
    host.push_back(run.data.train->micro_batch(plan.split, run.progress.consumed_samples, micro));
  }
  stage_step_inputs(run.inputs, host, lr);
  if (!run.graph) return train_step(run);
  if (run.graph->captured()) enter(run, "replay of the captured step");
  return run.graph->run([&run] { return train_step(run); });
}

// Validation loss in causal routing mode over the run's validation windows (val_batches
// global batches, split over dp ranks and micro-batches as in training): the mean over
// equal-sized micro-batches, i.e. over the windows, the same for every layout. With pipeline
// stages the micro-batches pass the stages in order and the last stage scores them.
double evaluate(Run& run) {
  enter(run, "evaluation");
  // No graph: evaluation never runs backward (and the chunked LM head then computes the loss alone).
  const c10::NoGradGuard no_grad;
  at::Tensor totals = at::zeros({2}, run.device.dtype(at::kDouble));  // loss sum, micro-batches
  const bool last_stage = run.ctx.grid.last_stage();
  const BatchPlan& plan = run.batches;
  auto forward = [&](int i, const at::Tensor& input) {
    const data::Batch batch = data::to_device(
        run.data.val->micro_batch(plan.split, i / plan.accumulation, i % plan.accumulation), run.device.device());
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
  parallel::run_forward_only(pipeline_spec(run, static_cast<int>(plan.val_batches) * plan.accumulation), forward);
  if (run.ctx.grid.shape.pp > 1) run.ctx.pp->all_reduce(totals, parallel::ReduceOp::kSum);
  if (run.ctx.grid.shape.dp > 1) run.ctx.dp->all_reduce(totals, parallel::ReduceOp::kSum);
  totals = totals.cpu();
  return totals[0].item<double>() / std::max(1.0, totals[1].item<double>());
}

RunResult train_run(const RunConfig& config, parallel::ParallelContext& ctx, const RunRequest& request,
                    RunPhase& phase) {
  install_preemption_handlers();  // before the first step: a signal during setup counts too
  // Outputs and resume settings first: a wrong path fails in a second, not at the first save.
  const EarlierRun earlier = check_run_start(config, request, ctx);
  Run run = build_run(config, ctx);
  arm_forwarded_signals(world_of(run), run.device);
  run.phase = &phase;
  phase.micro_batch = run.batches.micro_batch;
  restore(run, request);
  if (request.overwrite) set_aside_earlier_run(config, earlier, ctx);  // after --init-from read its checkpoint
  const auto& t = config.train;
  const Schedule schedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  const model::ModelStats stats = model::compute_model_stats(config.model, t.seq_len, ctx.grid.shape.tp);
  const std::optional<double> peak_flops = run_peak_flops(t);  // none: no MFU
  MetricsFile metrics(ctx.grid.rank == 0 ? config.log.jsonl : "", static_cast<int>(run.progress.step));
  ProgressLine progress_line(t.steps, static_cast<int>(run.progress.step), config.train.device == "cuda");
  common::log_info("model: %.2fM parameters, %d effective layers; batch %d x %d tokens (%d per rank x %d micro-batches)",
                   stats.params_total / 1e6, stats.effective_layers, t.global_batch, t.seq_len, run.batches.micro_batch,
                   run.batches.accumulation);

  RunResult result;
  const int64_t tokens_per_step = static_cast<int64_t>(t.global_batch) * t.seq_len;
  auto window_start = Clock::now();
  int window_steps = 0;
  const int64_t first_step = run.progress.step + 1;  // of this process: logged at once (includes warm-up)
  // Each step's numbers are read one step late (the host queues step N + 1 first), or at once
  // where the loop needs them: a metrics row, an evaluation, a save, a preemption.
  PendingSteps pending;
  StepNumbers latest;  // of the newest step read
  auto account = [&](int64_t step, const StepNumbers& n) {
    if (!n.applied) {
      if (t.on_nonfinite == "halt") {
        HYDRA_FAIL(common::RuntimeFailure, "non-finite loss " << n.loss << " or gradient norm " << n.grad_norm
                                               << " at step " << step << " (train.on_nonfinite: halt)");
      }
      run.progress.skipped += 1;  // the device left the weights and the optimizer state as they were
      common::log_warn("step %lld: non-finite loss or gradient, step skipped", static_cast<long long>(step));
    }
    latest = n;
    result.last_loss = n.loss;
  };
  while (run.progress.step < t.steps) {
    phase.step = run.progress.step + 1;
    const double lr = lr_at(schedule, static_cast<int>(run.progress.step));
    pending.push(run.progress.step + 1, run_step(run, lr));
    run.progress.step += 1;
    run.progress.consumed_samples += t.global_batch;
    run.progress.tokens += tokens_per_step;
    ++window_steps;
    const bool stop_here = t.stop_at_step > 0 && run.progress.step == t.stop_at_step;
    const bool last = run.progress.step == t.steps || stop_here;
    const bool eval_now = last || (t.eval_every > 0 && run.progress.step % t.eval_every == 0);
    const bool log_now =
        last || eval_now || run.progress.step == first_step || run.progress.step % config.log.every == 0;
    const bool save_now = last || (config.checkpoint.every > 0 && run.progress.step % config.checkpoint.every == 0);
    // A row and a checkpoint count every skipped step up to this one (and a halt comes first).
    pending.settle(log_now || save_now ? 0 : 1, account);
    if (log_now) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      StepMetrics row;
      row.step = static_cast<int>(run.progress.step);
      row.loss = latest.loss;
      row.aux_loss = latest.aux;
      row.lr = lr;
      row.grad_norm = latest.grad_norm;
      row.tokens = run.progress.tokens;
      row.tok_s = window_steps * tokens_per_step / std::max(seconds, 1e-9);
      if (peak_flops) row.mfu = row.tok_s * stats.flops_per_token / (*peak_flops * ctx.grid.shape.world());
      row.skipped = static_cast<int>(run.progress.skipped);
      row.mem_gb = memory_in_use_bytes(config.train.device == "cuda") / 1e9;
      if (eval_now) row.val_loss = evaluate(run), result.last_val_loss = row.val_loss;
      row.checkpoint = std::exchange(run.checkpoints.times, {});
      if (run.progress.step == first_step) row.params = ParamSplit{run.frozen.trainable_elements, run.frozen.frozen_elements};
      metrics.write(row);
      progress_line.print(row);
      window_start = Clock::now();
      window_steps = 0;
    }
    if (save_now) result.last_checkpoint = save(run, request.config_json);
    // SIGTERM/SIGUSR1 on any rank: all ranks agree at this step boundary, save, exit 75.
    if (preemption_agreed(world_of(run), run.device)) {
      pending.settle(0, account);
      if (!save_now) result.last_checkpoint = save(run, request.config_json);
      finish_async_save(run);
      HYDRA_FAIL(common::Preempted, "preempted by a signal at step " << run.progress.step << "; checkpoint "
                                        << result.last_checkpoint << " saved; continue with --resume latest");
    }
    if (stop_here) {
      common::log_info("train: stopped at step %d (train.stop_at_step); continue with --resume latest", t.stop_at_step);
      break;
    }
  }
  pending.settle(0, account);  // (the last step was read for its row already)
  finish_async_save(run);  // the last save is committed before the run reports it
  result.steps_done = static_cast<int>(run.progress.step);
  return result;
}

}  // namespace

RunResult run_training(const RunConfig& config, parallel::ParallelContext& ctx, const RunRequest& request) {
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

EvalResult run_evaluation(const RunConfig& config, parallel::ParallelContext& ctx, const std::string& dir,
                          const std::string& config_json) {
  Run run = build_run(config, ctx);
  const checkpoint::LoadedCheckpoint source = load_weights(run, dir, config_json);
  const double loss = evaluate(run);
  common::log_info("eval: %s val_loss %.4f perplexity %.2f (%d batches)", dir.c_str(), loss, std::exp(loss),
                   static_cast<int>(run.batches.val_batches));
  return {loss, source.progress.step, source.progress.tokens};
}

StepBenchResult run_step_bench(const RunConfig& config, parallel::ParallelContext& ctx, const StepBenchPlan& plan) {
  Run run = build_run(config, ctx);
  const auto& t = config.train;
  const bool cuda = t.device == "cuda";
  const Schedule schedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  StepBenchResult result;
  result.micro_batch = run.batches.micro_batch;
  result.accumulation = run.batches.accumulation;
  result.tokens_per_step = static_cast<int64_t>(t.global_batch) * t.seq_len;
  result.flops_per_token = model::compute_model_stats(config.model, t.seq_len, ctx.grid.shape.tp).flops_per_token;
  result.peak_flops = run_peak_flops(t);
  // The steps of a run, without what a run does between them (logging, evaluation, saving);
  // their numbers stay on the device until the end.
  at::Tensor last_numbers;
  // Collectives are counted on the host as they are issued, which a replay does not do: they
  // are counted over the first step, always eager (every step issues the same calls).
  const std::map<std::string, parallel::CallTotals> calls_before = parallel::call_totals(ctx);
  std::map<std::string, parallel::CallTotals> calls_in_first_step;
  bool first = true;
  auto one_step = [&] {
    last_numbers = run_step(run, lr_at(schedule, static_cast<int>(run.progress.step)));
    run.progress.step += 1;
    run.progress.consumed_samples += t.global_batch;
    if (first) calls_in_first_step = parallel::call_totals(ctx);
    first = false;
  };
  // A captured step is timed from its replays: the eager steps and the capture are warm-up.
  result.warmup_steps = run.graph ? std::max(plan.warmup, run.graph->steps_before_replay()) : plan.warmup;
  result.cuda_graphs = run.graph != nullptr;
  for (int i = 0; i < result.warmup_steps; ++i) one_step();
  synchronize_device(cuda);
  StepTimer timer(cuda);
  run.timer = &timer;
  const std::optional<parallel::HostWait> waited_before = parallel::host_wait(ctx);
  const auto start = Clock::now();
  for (int i = 0; i < plan.steps; ++i) {
    timer.begin_step();
    one_step();
    timer.end_step();
  }
  result.phases = timer.finish();  // waits for the device
  result.wall_step_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count() / std::max(plan.steps, 1);
  RankStepFigures mine;
  mine.step_ms = result.wall_step_ms;
  set_wait_figures(mine, waited_before, parallel::host_wait(ctx), plan.steps);
  for (const auto& [group, after] : calls_in_first_step) {
    const parallel::CallTotals before = calls_before.at(group);
    result.calls_per_step[group] = {static_cast<double>(after.calls - before.calls),
                                    static_cast<double>(after.bytes - before.bytes)};
  }
  run.timer = nullptr;
  if (plan.traced > 0) {
    plan.start_trace();
    for (int i = 0; i < plan.traced; ++i) one_step();
    synchronize_device(cuda);
    plan.stop_trace();
  }
  if (last_numbers.defined()) result.last_loss = LateStepNumbers(last_numbers).read().loss;
  const AllocatorPeaks peaks = allocator_peaks(cuda);
  result.peak_allocated_gb = peaks.allocated_bytes / 1e9;
  result.peak_reserved_gb = peaks.reserved_bytes / 1e9;
  result.predicted_peak_gb = estimate_memory(config, ctx.grid.shape).stages.at(ctx.grid.coord.pp).peak() / 1e9;
  result.device_used_gb = memory_in_use_bytes(cuda) / 1e9;
  mine.peak_allocated_gb = result.peak_allocated_gb;
  mine.peak_reserved_gb = result.peak_reserved_gb;
  mine.device_used_gb = result.device_used_gb;
  mine.predicted_peak_gb = result.predicted_peak_gb;
  result.ranks = gather_rank_figures(mine, ctx, run.device.device());
  return result;
}

}  // namespace hydra::train
