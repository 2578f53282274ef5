// The one place where LibTorch 1.13 (Debian, CPU flavour) and 2.x (PyTorch, CUDA flavour)
// differ for us. Everything else includes this instead of testing versions itself.
#pragma once

#include <torch/version.h>

// Debian's 1.13.1 reports 1.13.0: compare major/minor only.
#define HYDRA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention with `scale` (2.1+) and `enable_gqa` (2.5+).
#define HYDRA_HAS_SDPA HYDRA_TORCH_AT_LEAST(2, 5)

// Autocast state per device type (2.4+: at::autocast::is_autocast_enabled(at::kCUDA),
// get_autocast_dtype / set_autocast_enabled / set_autocast_dtype(at::kCUDA, ...)); before
// that the CUDA state is is_enabled() / get_autocast_gpu_dtype() / set_enabled /
// set_autocast_gpu_dtype. Code that saves and restores autocast state branches on this.
#define HYDRA_AUTOCAST_PER_DEVICE HYDRA_TORCH_AT_LEAST(2, 4)

// at::_foreach_copy_(dst list, src list): one multi-tensor copy (2.1+; asked from 2.4 on, the
// oldest 2.x we build against). Without it, one copy_ per tensor.
#define HYDRA_HAS_FOREACH_COPY HYDRA_TORCH_AT_LEAST(2, 4)

namespace hydra::common {

constexpr int kTorchMajor = TORCH_VERSION_MAJOR;
constexpr int kTorchMinor = TORCH_VERSION_MINOR;

}  // namespace hydra::common
