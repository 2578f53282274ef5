// `hydra diagnose` (docs/INTERFACE.md): the diagnostics the seed reports ran with a separate
// tool, measured on the model a user is about to train, in one process on the config's device
// and dtype. Sections:
//   speed   each attention type's layer (attention + MLP, as the model runs it) and the whole
//           model, forward and forward+backward, over a grid of batch and sequence lengths:
//           median ms and achieved TFLOP/s (FLOPs as docs/MODEL.md counts them); on CUDA the
//           peak memory of each point; for the model, hydra info's estimate of that peak.
//   memory  per attention type: parameters (counted on the built layer), bytes of weights,
//           gradients and optimizer state, activation bytes a token leaves for the backward,
//           KV-cache bytes a token; and hydra info's peak estimate for the configured run.
//   gradients  a short training run (the config's data from its start, or the bytes of a
//           text every Debian has): every parameter's gradient norm at every step (before
//           clipping), with flags on the norm per element (norm / sqrt(numel), so that a
//           matrix and a norm's weight compare): exploding (its mean above kExplodingFactor x
//           the median parameter's), vanishing (never above kVanishingFactor x it), non-finite.
//   learning   loss curves of the same short run for the configured model and for a stack of
//           each attention type alone at about the same parameter count; the routers' use.
//   components CCQA's parts switched off or changed one at a time, each a short run.
//   compression  CCQA's C at the configured value, half and double it (compression_sweep), and
//           the configured C in the other layout: short runs and one CCQA layer's time.
// Then recommendations: documented rules over what was measured (diagnose_advice.cpp).
// The launcher writes the report (launcher/cmd_diagnose.cpp); this is the measuring.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/json.h"
#include "model/config.h"
#include "train/memory_estimate.h"
#include "train/run_config.h"

namespace hydra::train {

// Every section, in report order; the ones not built yet are refused by name.
const std::vector<std::string>& diagnose_sections();

constexpr double kExplodingFactor = 100.0;
constexpr double kVanishingFactor = 1e-3;

struct DiagnoseOptions {
  std::vector<std::string> sections = diagnose_sections();
  std::vector<int64_t> batches = {1, 4, 8};
  std::vector<int64_t> seqs = {256, 512, 1024};
  int repeats = 3;  // timed passes per point (the median is reported), after one untimed pass
  int steps = 20;   // training steps of each short run (gradients, learning, components, compression)
  std::function<void(const std::string&)> progress;  // a line per measured point
};

// One measured point: a layer type ("mqa", "ccqa", "mla") or "model", at batch x seq.
struct SpeedPoint {
  std::string what;
  int64_t batch = 0, seq = 0;
  double forward_ms = 0, fwdbwd_ms = 0;  // medians
  double forward_flops = 0;              // of one forward pass; forward+backward counts 3x
  double peak_gb = 0;                    // CUDA: the allocator's peak during the point; 0 elsewhere
  // "model" points: what hydra info's estimate says this pass holds at its peak (weights,
  // activations and buffers at this batch and sequence; the pass has no optimizer state).
  double predicted_gb = 0;
  std::string error;                     // the point could not run (e.g. out of memory): why
};

struct LayerMemory {
  std::string type;
  int64_t params = 0;                      // counted on the built layer (attention, norms, MLP)
  int64_t weight_bytes = 0;                // in the model dtype
  int64_t gradient_bytes = 0;              // in the model dtype (.grad)
  int64_t optimizer_bytes = 0;             // fp32 master, m, v and the one-byte decay mask
  int64_t activation_bytes_per_token = 0;  // kept for the backward (model/activation_memory.h)
  int64_t kv_bytes_per_token = 0;          // bf16 KV cache
};

// One parameter's gradient norm over the steps of the gradients section.
struct ParamGradient {
  std::string name;
  std::string type;       // its layer's attention type, or "model" (embedding, final norm, routers)
  std::string component;  // the name within its layer ("attn.wq.weight"), or the whole name
  int64_t numel = 0;
  double mean = 0, min = 0, max = 0, first = 0, last = 0;  // of the norm
  double mean_rms = 0, max_rms = 0;                         // of the norm per element
  std::string flag;       // "", "exploding", "vanishing", "non-finite"
};

struct GradientReport {
  int steps = 0;
  std::string data;           // where the tokens came from
  std::vector<double> loss;   // LM loss of each step
  std::vector<ParamGradient> params;
  double median_rms = 0;      // the median over parameters of mean_rms: the flags' scale
};

// One router's use over a short run: selected and candidate tokens summed over the steps, and
// the mean binary entropy (nats) of its probabilities sigmoid(r) over the candidates.
struct RouterUse {
  std::string name;
  int64_t selected = 0, candidates = 0;
  double entropy = 0;
};

// One short run of the learning, components or compression section: the same data, seed and
// steps as its section's other runs, one configuration change.
struct RunCurve {
  std::string name;    // "model", "mqa stack", "convs off", "C 8", ...
  std::string change;  // the --set keys that make it from the configured model ("": none)
  int64_t params = 0;
  int layers = 0;      // effective layers
  std::vector<double> loss;  // LM loss of each step
  double final_loss = 0;     // mean of the last kFinalSteps losses
  double improvement = 0;    // first loss - final_loss
  int steps_to_threshold = -1;  // first step (1-based) whose kFinalSteps-step mean reaches the threshold; -1: never
  double ms_per_step = 0;    // median step, host clock
  double peak_gb = 0;        // CUDA: the allocator's peak; 0 elsewhere
  double ccqa_layer_ms = 0;  // compression: one CCQA layer's forward+backward at the grid's largest point
  std::string error;         // the change has no valid model (config checks): why; nothing measured
};

constexpr int kFinalSteps = 3;

struct CurveSet {
  // The worst final loss among the section's runs: every run gets there; steps_to_threshold
  // says how soon.
  double threshold = 0;
  std::vector<RunCurve> runs;  // runs[0]: the configured model
};

struct LearningReport : CurveSet {
  std::vector<RouterUse> routers;  // of the configured model's run (MoD, MoR)
};

// A recommendation: the rule that fired (its id, documented in docs/INTERFACE.md) and what it
// says, built from measured numbers.
struct Recommendation {
  std::string rule;
  std::string text;
};

// The run-to-run noise of the short runs' final loss: the spread (max - min) over the runs of the
// configured model the sections made (learning's, components', compression's: `runs` of them),
// and the margin the recommendations require of a difference, max(0.02, 2 x spread).
struct LossNoise {
  int runs = 0;
  double spread = 0, margin = 0;
};

struct DiagnoseReport {
  std::string device, dtype, date;
  std::vector<std::string> sections;
  std::vector<SpeedPoint> speed;
  std::vector<LayerMemory> layers;
  MemoryEstimate estimate;  // the configured run on one process (hydra info's)
  GradientReport gradients;
  LearningReport learning;
  CurveSet components, compression;
  LossNoise noise;
  std::vector<Recommendation> recommendations;
  int64_t params_total = 0;
  int configured_compression = 0;  // model.ccqa.compression
  std::string configured_compress;  // model.ccqa.compress (the layout)
};

// Refuses (ConfigError naming the option) unknown sections and empty or non-positive grids;
// with a config, also sections it cannot run (components and compression without a ccqa layer).
void check_diagnose_options(const DiagnoseOptions& options);
void check_diagnose_options(const DiagnoseOptions& options, const model::ModelConfig& model);

// The compression section's values of C in the configured layout: the configured C first, then
// half and double it, each replaced by the valid C in [2, 8] nearest to it on its side of the
// configured one where the layout refuses it (under `heads` C must divide H: `small`, H 12, C 4
// gives 4, 2, 6), and left out where that side has none.
std::vector<int> compression_sweep(const model::ModelConfig& model);

DiagnoseReport run_diagnose(const RunConfig& config, const DiagnoseOptions& options);

// report.json (every number) and report.md (readable alone; `figures`: PNG file names beside it).
common::Json diagnose_json(const DiagnoseReport& report);
std::string diagnose_markdown(const DiagnoseReport& report, const std::vector<std::string>& figures);

}  // namespace hydra::train
