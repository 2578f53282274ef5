// Host copies for a checkpoint snapshot (checkpoint/snapshot.h): copies that training cannot
// change under the writer thread, taken at a step boundary as fast as the hardware allows.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace hydra::checkpoint {

class HostCopier {
 public:
  // A contiguous CPU copy of `t`. From a CUDA device: into pinned (page-locked) host memory,
  // queued on the device's current stream without waiting — a direct DMA at full bandwidth
  // instead of a copy staged through pageable memory; call wait() before reading it. From
  // the CPU: a plain copy, complete on return.
  at::Tensor copy(const at::Tensor& t);
  // Blocks until every copy made so far has landed in host memory.
  void wait();

 private:
  std::vector<at::Device> pending_;  // devices with copies in flight
};

}  // namespace hydra::checkpoint
