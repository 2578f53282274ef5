// The schema of the run config: every key users may write, its type, range or choices, and
// whether it is required. Defaults are the member initialisers of the config structs
// (train/run_config.h, model/config.h, parallel/config.h): one place, read through `field`.
#pragma once

#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "launcher/config.h"

namespace hydra::launcher {

// Where a key's value lives in a Config.
using FieldRef = std::variant<int*, double*, bool*, std::string*, std::vector<int>*,
                              std::vector<std::string>*>;

struct KeySpec {
  const char* path;                 // "model.ccqa.compression"
  FieldRef (*field)(Config&);       // the member it sets
  double min = -std::numeric_limits<double>::infinity();  // numbers and list elements
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices; // strings and string-list elements; empty: any
  bool required = false;            // no usable default: file, preset or --set must set it
  const char* help = "";
};

// All keys, section by section, in documentation order.
const std::vector<KeySpec>& config_schema();
const KeySpec* find_key(const std::string& path);

// "an integer", "a number", "true or false", ... for messages.
std::string describe_expected(const KeySpec& spec);

}  // namespace hydra::launcher
