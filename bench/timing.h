// Device timing for the dev benchmarks: CUDA events around each iteration on the current
// stream, warm-up first, the median of the timed iterations. Each iteration starts on an idle
// device, so the events also count any time the device waits for the host to launch work;
// host_median_ms (the host's time to return from fn, launches included) tells the two apart:
// close to median_ms means the host, not the device, sets the pace.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>

#include "common/errors.h"

namespace hydra::bench {

#define HYDRA_BENCH_CUDA(call)                                                                                 \
  do {                                                                                                         \
    const cudaError_t rc_ = (call);                                                                            \
    if (rc_ != cudaSuccess) {                                                                                  \
      HYDRA_FAIL(::hydra::common::RuntimeFailure, __FILE__ << ":" << __LINE__ << ": " #call ": " << cudaGetErrorString(rc_)); \
    }                                                                                                          \
  } while (0)

struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  int iters = 0;
  double host_median_ms = 0;  // host time inside fn (enqueueing), median over the same iterations
};

// Runs fn `warmup` times, then enough times to fill about target_ms (at least min_iters,
// at most max_iters), each between two events; returns the median and the minimum.
inline Timing time_device(const std::function<void()>& fn, int warmup = 3, double target_ms = 300.0,
                          int min_iters = 10, int max_iters = 100) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  HYDRA_BENCH_CUDA(cudaEventCreate(&start));
  HYDRA_BENCH_CUDA(cudaEventCreate(&stop));
  double host_ms = 0;
  auto once = [&] {
    HYDRA_BENCH_CUDA(cudaEventRecord(start, stream));
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    HYDRA_BENCH_CUDA(cudaEventRecord(stop, stream));
    HYDRA_BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    HYDRA_BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  };
  const double first = once();
  const int iters = std::clamp(static_cast<int>(target_ms / std::max(first, 1e-3)), min_iters, max_iters);
  std::vector<double> ms(static_cast<size_t>(iters)), host(static_cast<size_t>(iters));
  for (size_t i = 0; i < ms.size(); ++i) {
    ms[i] = once();
    host[i] = host_ms;
  }
  HYDRA_BENCH_CUDA(cudaEventDestroy(start));
  HYDRA_BENCH_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  std::sort(host.begin(), host.end());
  return {ms[ms.size() / 2], ms.front(), iters, host[host.size() / 2]};
}

}  // namespace hydra::bench
