// The files `hydra plan` reads besides the run config (docs/SCALING.md): the cluster (YAML,
// strict: every key required, no other, every number positive) and the optional calibration
// from `hydra bench step --json` and `hydra bench comm --json`. Errors are ConfigError (exit 2)
// naming the file and the key.
#pragma once

#include <functional>
#include <string>

#include "train/plan_model.h"

namespace hydra::launcher {

train::Cluster load_cluster(const std::string& path);

// One calibration run of the plan's model: a `hydra bench step --json` output of one GPU
// without accumulation or recompute (with --tp-slice N or without), whose flops_per_token must
// be `flops_per_token(N)` (the same model and sequence length at that tensor parallelism; 1
// without a slice) and dtype `dtype`; anything else is refused naming the file and key.
train::CalibrationPoint load_calibration_point(const std::string& path,
                                               const std::function<double(int tp)>& flops_per_token,
                                               const std::string& dtype);

// Replaces the cluster's intra-node link (inter-node when the file's world exceeds
// gpus_per_node) with a `hydra bench comm --json` output's all_reduce of the world group: the
// bus bandwidth of its largest message, the latency of its smallest over 2(n-1) steps.
void apply_comm_file(const std::string& path, train::Cluster& cluster);

}  // namespace hydra::launcher
