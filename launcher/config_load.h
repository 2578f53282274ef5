// Loading the run config. Precedence, lowest first:
//   1. defaults (the config structs' member initialisers)
//   2. the `model` section of the preset named by model.preset (configs/<name>.yaml)
//   3. the config file
//   4. --set key.path=value overrides, in command-line order
// Every value is type- and range-checked against the schema; a bad key, type, range,
// preset or missing required key throws ConfigError (exit 2) naming the file, line and key.
#pragma once

#include <string>
#include <vector>

#include "common/json.h"
#include "launcher/config.h"

namespace hydra::launcher {

// Whether a config must run on this build (train.device: cuda needs the CUDA build), or is
// only described (`hydra plan` predicts CUDA runs on any machine).
enum class BuildCheck { kThisBuild, kAnyBuild };

// config_path may be empty (defaults, presets and --set only).
Config load_config(const std::string& config_path, const std::vector<std::string>& sets,
                   BuildCheck build = BuildCheck::kThisBuild);

// Cross-key checks that need no world size (model shape, lr bounds, device vs build).
void check_config(const Config& config, BuildCheck build = BuildCheck::kThisBuild);

// The resolved config as JSON, nested by section, every key of the schema.
common::Json config_to_json(const Config& config);

}  // namespace hydra::launcher
