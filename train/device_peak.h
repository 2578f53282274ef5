// The peak dense bf16 FLOP/s of one GPU, the denominator of MFU (docs/MODEL.md): a table
// keyed by the detected GPU's name, or train.peak_tflops.
#pragma once

#include <optional>
#include <string>

#include "train/config.h"

namespace hydra::train {

// TFLOP/s from the table (vendor datasheets, dense bf16 tensor cores) for a GPU name as the
// CUDA driver reports it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", ...); none for a
// GPU not in it.
std::optional<double> table_peak_tflops(const std::string& gpu_name);

// The name of the current CUDA device; "" in the CPU build or without a device.
std::string current_gpu_name();

// The peak FLOP/s of one rank's device for this run: train.peak_tflops if set; otherwise the
// table's entry for the detected GPU (a warning, and no MFU, for one not in it); none off the
// GPU (train.device cpu: no MFU).
std::optional<double> run_peak_flops(const TrainConfig& train);

}  // namespace hydra::train
