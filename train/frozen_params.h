// train.freeze (docs/INTERFACE.md, "Fine-tuning"): the parameters a run leaves as they are.
// Patterns match full model names (docs/MODEL.md, "Parameters"), which every rank uses
// whatever part of a parameter it holds (a tp slice) and whichever stage holds it (pp), so all
// ranks freeze the same parameters. A frozen parameter is marked requires_grad false before
// the optimizer is built: autograd computes no gradient for it and the data-parallel optimizer
// leaves it out (no master weights, moments, bucket or reduction; not in the gradient norm:
// parallel/data_parallel_optimizer.h). Checkpoints still store it (train/run_checkpoints.cpp).
#pragma once

#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/hydra_model.h"
#include "parallel/parallel_context.h"

namespace hydra::train {

// Whether `pattern` matches all of `name`: `*` matches any run of characters (dots
// included, so `blocks.*.attn.*` reaches every layer's attention), any other character itself.
bool glob_matches(const std::string& pattern, const std::string& name);

// Whether any of train.freeze's `patterns` matches `name`.
bool is_frozen(const std::vector<std::string>& patterns, const std::string& name);

// One parameter a rank holds, as counted: its full name, the elements of the whole parameter
// (without vocabulary padding), and whether this rank counts it (false for the last pipeline
// stage's copy of a tied embedding: the first stage counts it).
struct ParamCount {
  std::string name;
  int64_t elements = 0;
  bool counted = true;
};

struct FreezeCounts {
  std::vector<int64_t> matches;  // per pattern: the parameters (tensors) it matches
  int64_t frozen_tensors = 0;
  int64_t trainable_tensors = 0;
  int64_t frozen_elements = 0;
  int64_t trainable_elements = 0;
};

// The counts of `params` under `patterns` (counted parameters only). Pure.
FreezeCounts count_frozen(const std::vector<std::string>& patterns, const std::vector<ParamCount>& params);

// ConfigError (exit 2) naming `source`, the key train.freeze and the pattern, for a pattern
// that matches no parameter of the whole model; for nothing left to train; and, under pipeline
// parallelism, for a stage left with nothing to train (`empty_stage` >= 0: its index), whose
// optimizer would hold no state to checkpoint.
void check_freeze(const std::string& source, const std::vector<std::string>& patterns, const FreezeCounts& whole,
                  int empty_stage);

// Freezes the parameters of `model` (this rank's part) that `patterns` match, checks the
// whole model's counts (summed over the pipeline stages: collective over ctx.pp) and logs how
// many parameters train and how many are frozen. Every rank gets the whole model's counts.
FreezeCounts freeze_parameters(const std::string& source, const std::vector<std::string>& patterns,
                               model::HydraModelImpl& model, parallel::ParallelContext& ctx,
                               const at::TensorOptions& device);

}  // namespace hydra::train
