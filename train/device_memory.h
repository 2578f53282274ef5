// The caching allocator's memory figures for a benchmark (CUDA build, train.device cuda);
// zeros elsewhere. The running trainer reports the device's used memory instead
// (progress.h: memory_in_use_bytes).
#pragma once

namespace hydra::train {

struct AllocatorPeaks {
  double allocated_bytes = 0;  // the most held by live tensors at once
  double reserved_bytes = 0;   // the most the allocator held from the device (cached blocks included)
};

AllocatorPeaks allocator_peaks(bool cuda);

// Starts the peaks afresh from what is held now (a measurement of one piece of work).
void reset_allocator_peaks(bool cuda);

// The current device's memory in bytes (CUDA build, train.device cuda); 0 elsewhere.
double device_total_bytes(bool cuda);

// Waits until the device has run everything queued (no-op on the CPU).
void synchronize_device(bool cuda);

}  // namespace hydra::train
