// Private to kernels/: a failed CUDA call becomes a RuntimeFailure carrying file:line and
// CUDA's message. One definition for every launcher.
#pragma once

#include <cuda_runtime_api.h>

#include "common/errors.h"

#define HYDRA_KERNEL_CHECK(call)                                                                   \
  do {                                                                                             \
    const cudaError_t hydra_rc_ = (call);                                                          \
    if (hydra_rc_ != cudaSuccess) {                                                                \
      HYDRA_FAIL(::hydra::common::RuntimeFailure,                                                  \
                 __FILE__ << ":" << __LINE__ << ": " #call ": " << cudaGetErrorString(hydra_rc_)); \
    }                                                                                              \
  } while (0)
