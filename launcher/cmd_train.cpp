// `hydra train` and `hydra eval`: build the process grid and its communicators, then hand
// over to the training loop (train/trainer.h).

#include <cmath>
#include <cstdio>

#include "common/logging.h"
#include "common/errors.h"
#include "common/json.h"
#include "launcher/commands.h"
#include "launcher/config_load.h"
#include "parallel/parallel_context.h"
#include "parallel/tp_slice.h"
#include "train/trainer.h"

namespace hydra::launcher {
namespace {

// `hydra eval --json`: one object, floats at full precision, with the position of the run
// that wrote the weights.
common::Json eval_json(const Config& config, const std::string& source, const train::EvalResult& result) {
  common::Json out = common::Json::object();
  out["checkpoint"] = source;
  out["step"] = result.step;
  out["tokens"] = result.tokens;
  out["eval_batches"] = config.train.eval_batches;
  out["val_loss"] = result.val_loss;
  out["perplexity"] = std::exp(result.val_loss);
  return out;
}

std::string backend_of(const Config& config) {
  if (config.parallel.backend != "auto") return config.parallel.backend;
  return config.train.device == "cuda" ? "nccl" : "mpi";
}

}  // namespace

std::unique_ptr<parallel::ParallelContext> build_context(const Config& config, const parallel::LaunchInfo& launch) {
  const parallel::GridShape shape =
      parallel::resolve_grid_shape(launch.world, config.parallel.dp, config.parallel.tp, config.parallel.pp);
  return parallel::make_parallel_context(parallel::make_process_grid(shape, launch.rank), backend_of(config),
                                         config.parallel.timeout_s);
}

std::unique_ptr<parallel::ParallelContext> build_tp_slice_context(const Config& config, int tp) {
  return parallel::make_tp_slice_context(tp, backend_of(config), config.parallel.timeout_s);
}

int run_train(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  if (config.data.path.empty()) {
    HYDRA_FAIL(common::ConfigError, (config.source.empty() ? "config" : config.source)
                                        << ": data.path: hydra train needs a prepared corpus "
                                           "(hydra data prepare --output DIR; then data.path: DIR)");
  }
  auto ctx = build_context(config, launch);
  train::RunRequest request;
  if (!args.resume.empty()) request.resume = args.resume;
  if (!args.init_from.empty()) request.init_from = args.init_from;
  request.overwrite = args.overwrite;
  request.config_json = config_to_json(config).dump(2);
  const train::RunResult result = train::run_training(config, *ctx, request);
  common::log_info("train: done, %d steps, loss %.4f%s", result.steps_done, result.last_loss,
                   result.last_val_loss ? common::strprintf(", val_loss %.4f", *result.last_val_loss).c_str() : "");
  return 0;
}

int run_eval(const Config& config, const CliArgs& args, const parallel::LaunchInfo& launch) {
  auto ctx = build_context(config, launch);
  const train::EvalResult result = train::run_evaluation(config, *ctx, args.checkpoint, config_to_json(config).dump());
  if (launch.rank != 0) return 0;
  if (args.json) {
    std::printf("%s\n", eval_json(config, args.checkpoint, result).dump().c_str());
  } else {
    std::printf("val_loss %.6f perplexity %.4f\n", result.val_loss, std::exp(result.val_loss));
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace hydra::launcher
