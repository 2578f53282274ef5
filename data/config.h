// The data section of the run config. Plain data: the launcher fills and validates it.
#pragma once

#include <string>

namespace hydra::data {

struct DataConfig {
  std::string path;               // directory written by `hydra data prepare`
  std::string tokenizer = "gpt2"; // gpt2|bytes
};

}  // namespace hydra::data
