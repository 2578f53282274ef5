#include "launcher/version.h"

#include <torch/version.h>

namespace hydra::launcher {

std::string version_text() {
#ifdef HYDRA_CUDA
  const char* flavour = "CUDA build";
#else
  const char* flavour = "CPU build";
#endif
  return std::string("hydra ") + HYDRA_VERSION + " (commit " + git_commit() + ", " + flavour + ", LibTorch " +
         TORCH_VERSION + ")";
}

}  // namespace hydra::launcher
