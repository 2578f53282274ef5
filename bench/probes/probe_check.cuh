// The probes' one error check (bench/probes: standalone programs built with nvcc alone, which
// find this header next to them): a failed CUDA call prints where and exits 2, apart from a
// probe's own mismatch exit 1.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#define CHECK(x)                                                                           \
  do {                                                                                     \
    const cudaError_t e = (x);                                                             \
    if (e != cudaSuccess) {                                                                \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)
