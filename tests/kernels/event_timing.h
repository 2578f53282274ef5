// The kernel tests' timings (disabled tests that print figures for docs/PERF.md, not checks):
// the median over CUDA events on one stream.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace hydra::test {

// The median time in ms of `repeats` calls of `fn` on `stream`, after `warmup` untimed ones.
inline float median_event_ms(const std::function<void()>& fn, int repeats, int warmup, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> ms;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(e0, stream);
    fn();
    cudaEventRecord(e1, stream);
    cudaEventSynchronize(e1);
    float t = 0.f;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace hydra::test
