#include "train/device_peak.h"

#ifdef HYDRA_CUDA
#include <cuda_runtime_api.h>
#endif

#include "common/logging.h"

namespace hydra::train {
namespace {

struct PeakEntry {
  const char* name_part;  // the first entry whose part the name contains wins
  double tflops;
};

// Variants first (PCIe and NVL parts are slower than the SXM part of the same name).
constexpr PeakEntry kPeaks[] = {
    {"H100 PCIe", 756}, {"H100 NVL", 835}, {"H100", 989},  // H100 SXM: "NVIDIA H100 80GB HBM3"
    {"H200 NVL", 835},  {"H200", 989},                     // H200 SXM: "NVIDIA H200"
    {"A100", 312},                                         // SXM4 and PCIe alike
};

}  // namespace

std::optional<double> table_peak_tflops(const std::string& gpu_name) {
  for (const PeakEntry& e : kPeaks) {
    if (gpu_name.find(e.name_part) != std::string::npos) return e.tflops;
  }
  return std::nullopt;
}

std::string current_gpu_name() {
#ifdef HYDRA_CUDA
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) == cudaSuccess && cudaGetDeviceProperties(&prop, device) == cudaSuccess) return prop.name;
#endif
  return "";
}

std::optional<double> run_peak_flops(const TrainConfig& train) {
  if (train.device != "cuda") return std::nullopt;
  if (train.peak_tflops > 0) return train.peak_tflops * 1e12;
  const std::string gpu = current_gpu_name();
  if (const auto tflops = table_peak_tflops(gpu)) return *tflops * 1e12;
  common::log_warn("mfu: no peak FLOP/s known for GPU '%s'; set train.peak_tflops to report MFU", gpu.c_str());
  return std::nullopt;
}

}  // namespace hydra::train
