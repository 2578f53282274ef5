// The checkpoint section of the run config. Plain data: the launcher fills and validates it.
#pragma once

#include <string>

namespace hydra::checkpoint {

struct CheckpointConfig {
  std::string dir = "checkpoints";
  int every = 0;                  // 0: only at the end
  int keep = 3;
  bool async = false;             // write rank files in a background thread (checkpoint/async_save.h)
};

}  // namespace hydra::checkpoint
