// The kernel tests' error measure: ||got - ref|| / ||ref||, in float64 on the CPU whatever
// the inputs' dtype and device (the floor keeps an all-zero reference finite).
#pragma once

#include <torch/torch.h>

#include <algorithm>

namespace hydra::test {

inline double rel_l2(const torch::Tensor& got, const torch::Tensor& ref) {
  const torch::Tensor g = got.detach().cpu().to(torch::kDouble), r = ref.detach().cpu().to(torch::kDouble);
  return (g - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-300);
}

}  // namespace hydra::test
