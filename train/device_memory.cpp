#include "train/device_memory.h"

#ifdef HYDRA_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace hydra::train {

AllocatorPeaks allocator_peaks(bool cuda) {
  AllocatorPeaks peaks;
#ifdef HYDRA_CUDA
  if (cuda) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    // [0]: the aggregate over small and large pools.
    peaks.allocated_bytes = static_cast<double>(stats.allocated_bytes[0].peak);
    peaks.reserved_bytes = static_cast<double>(stats.reserved_bytes[0].peak);
  }
#else
  (void)cuda;
#endif
  return peaks;
}

void reset_allocator_peaks(bool cuda) {
#ifdef HYDRA_CUDA
  if (cuda) c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
#else
  (void)cuda;
#endif
}

double device_total_bytes(bool cuda) {
#ifdef HYDRA_CUDA
  if (cuda) {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) return static_cast<double>(total);
  }
#else
  (void)cuda;
#endif
  return 0;
}

void synchronize_device(bool cuda) {
#ifdef HYDRA_CUDA
  if (cuda) c10::cuda::device_synchronize();
#else
  (void)cuda;
#endif
}

}  // namespace hydra::train
