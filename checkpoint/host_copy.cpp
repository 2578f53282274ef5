#include "checkpoint/host_copy.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace hydra::checkpoint {

at::Tensor HostCopier::copy(const at::Tensor& t) {
  const at::Tensor src = t.detach();
  if (!src.is_cuda()) {
    // to() with copy = true copies CPU tensors too.
    return src.to(at::TensorOptions().device(at::kCPU), /*non_blocking=*/false, /*copy=*/true).contiguous();
  }
  // Pinned blocks come from PyTorch's caching host allocator: the first save allocates them,
  // later saves of the same sizes reuse them (docs/CHECKPOINT.md).
  at::Tensor dst = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
  dst.copy_(src, /*non_blocking=*/true);
  if (std::find(pending_.begin(), pending_.end(), src.device()) == pending_.end()) pending_.push_back(src.device());
  return dst;
}

void HostCopier::wait() {
  // The non-blocking copies were queued on each device's current stream. A blocking
  // device-to-host copy on that same stream returns only after the stream has run
  // everything queued before it, so one tiny copy per device waits for all of them
  // (without CUDA headers, which checkpoint/ must build without).
  for (const at::Device& device : pending_) {
    (void)at::zeros({1}, at::TensorOptions().device(device)).cpu();
  }
  pending_.clear();
}

}  // namespace hydra::checkpoint
