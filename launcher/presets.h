// Model presets (`model.preset: NAME`). A preset is a file NAME.yaml in the config file's
// directory or the installed configs/ whose `model` section is a complete model: it sets
// every required model key and names no other preset. Other YAML files there (run configs
// without a full model) are not presets: they are never listed as such, and naming one is
// an error that says what it lacks.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace hydra::launcher {

// Where presets are looked up: the config file's directory, then the installed configs/.
std::vector<std::string> preset_search_dirs(const std::string& config_path);

struct PresetFile {
  std::string path;
  YAML::Node root;  // the whole file; its `model` section is the preset
};

// The preset `name`; `loc` says where the name was given ("run.yaml:3" or "--set").
// ConfigError (exit 2) naming the preset and the presets there are when it is not found, or
// naming what the file lacks when it is not a preset.
PresetFile find_preset(const std::string& name, const std::string& config_path, const std::string& loc);

}  // namespace hydra::launcher
