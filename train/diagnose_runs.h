// Private to `hydra diagnose` (train/diagnose*.cpp): the short training runs that its
// gradients, learning and components sections are made of, on one data stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/config.h"
#include "model/hydra_model.h"
#include "model/routing.h"
#include "train/diagnose.h"
#include "train/run_config.h"

namespace hydra::train {

// Token windows of seq_len + 1 for `rows` sequences a step: the configured training data from
// its start, or the bytes of a text every Debian has (the byte values are token ids below 256).
struct DiagnoseData {
  std::shared_ptr<const data::TrainData> train;
  std::vector<int64_t> bytes;
  std::string source;

  data::Batch batch(int64_t step, int64_t rows, int64_t seq_len) const;
};

// Throws ConfigError when data.path is unset and the built-in sample cannot serve the config.
DiagnoseData open_diagnose_data(const RunConfig& config);

struct ShortRun {
  std::vector<double> loss;   // LM loss of each step
  double ms_per_step = 0;     // the median step (forward, backward, optimizer), host clock
  double peak_gb = 0;         // CUDA: the allocator's peak; 0 elsewhere
  int64_t params = 0;
  std::vector<RouterUse> routers;
};

// `steps` steps of `model` from train.seed on `data` (the first steps' batches: every run sees
// the same tokens), LibTorch's AdamW at train.lr (no schedule, no fp32 master: what is measured
// is the model) and train.clip. after_backward, when given, sees the model after each backward,
// before clipping.
ShortRun short_run(const RunConfig& config, const model::ModelConfig& model, const DiagnoseData& data, int steps,
                   const std::function<void(int, model::HydraModelImpl&)>& after_backward = {});

// A short run as a section's RunCurve (final loss, improvement; the threshold comes later, from
// the whole set: set_thresholds).
RunCurve curve_of(const std::string& name, const std::string& change, const model::ModelConfig& model,
                  const ShortRun& run);
void set_thresholds(CurveSet& set);

// The sections made of short runs. gradients: every parameter's gradient norm at every step of
// the configured model's run. learning: the configured model, then a stack of each attention
// type alone at about its parameter count (MoD and MoR off). components: CCQA's parts switched
// off or changed one at a time. compression: CCQA's C of compression_sweep (diagnose.h).
void run_gradients(const RunConfig& config, const DiagnoseOptions& options, const DiagnoseData& data,
                   DiagnoseReport& report);
void run_learning(const RunConfig& config, const DiagnoseOptions& options, const DiagnoseData& data,
                  DiagnoseReport& report);
void run_components(const RunConfig& config, const DiagnoseOptions& options, const DiagnoseData& data,
                    DiagnoseReport& report);

// The recommendations' rules over whatever sections ran, and the loss noise they use
// (diagnose_advice.cpp): loss_noise first, into report.noise.
LossNoise loss_noise(const DiagnoseReport& report);
std::vector<Recommendation> recommendations(const DiagnoseReport& report);

}  // namespace hydra::train
