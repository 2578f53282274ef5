#include "launcher/presets.h"

#include <algorithm>
#include <filesystem>

#include "common/errors.h"
#include "launcher/config_schema.h"
#include "launcher/nearest_name.h"
#include "launcher/yaml_file.h"

namespace hydra::launcher {
namespace {

namespace fs = std::filesystem;
using common::ConfigError;

// The node at a dotted path below `root` ("model.ccqa.compression"); undefined if absent.
YAML::Node node_at(const YAML::Node& root, const std::string& path) {
  if (!root.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  const size_t dot = path.find('.');
  const YAML::Node child = root[path.substr(0, dot)];  // const []: never inserts
  return dot == std::string::npos ? child : node_at(child, path.substr(dot + 1));
}

// Why `root` is not a preset, or empty when it is one.
std::string preset_defect(const YAML::Node& root) {
  const YAML::Node model = node_at(root, "model");
  if (!model.IsDefined()) return "it has no model section";
  if (!model.IsMap()) return "its model section is not a map of keys";
  if (model["preset"]) return "it names another preset (model.preset); a preset cannot name another";
  std::string missing;
  for (const auto& spec : config_schema()) {
    const std::string path = spec.path;
    if (spec.required && path.rfind("model.", 0) == 0 && !node_at(root, path).IsDefined()) {
      missing += (missing.empty() ? "" : ", ") + path;
    }
  }
  return missing.empty() ? "" : "its model section does not set " + missing + " (a preset is a complete model)";
}

// The names of the presets in `dirs`, sorted; files that do not load or are not presets are left out.
std::vector<std::string> known_presets(const std::vector<std::string>& dirs) {
  std::vector<std::string> names;
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() != ".yaml") continue;
      try {
        if (preset_defect(load_yaml_file(entry.path().string(), "preset")).empty()) {
          names.push_back(entry.path().stem().string());
        }
      } catch (const ConfigError&) {
        // A broken YAML file beside the config is not a preset; it is not ours to report here.
      }
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace

std::vector<std::string> preset_search_dirs(const std::string& config_path) {
  std::vector<std::string> dirs;
  if (!config_path.empty()) {
    const fs::path parent = fs::path(config_path).parent_path();
    dirs.push_back(parent.empty() ? "." : parent.string());
  }
  dirs.push_back(HYDRA_CONFIG_DIR);
  return dirs;
}

PresetFile find_preset(const std::string& name, const std::string& config_path, const std::string& loc) {
  const std::vector<std::string> dirs = preset_search_dirs(config_path);
  if (name.find('/') != std::string::npos) {
    HYDRA_FAIL(ConfigError, loc << ": model.preset: '" << name << "' is a path; a preset is a name (NAME.yaml in "
                                << dirs.front() << " or " << dirs.back() << ")");
  }
  for (const auto& dir : dirs) {
    const fs::path candidate = fs::path(dir) / (name + ".yaml");
    if (!fs::is_regular_file(candidate)) continue;
    PresetFile preset{candidate.string(), load_yaml_file(candidate.string(), "preset")};
    if (const std::string defect = preset_defect(preset.root); !defect.empty()) {
      HYDRA_FAIL(ConfigError, loc << ": model.preset: " << preset.path << " is not a preset: " << defect);
    }
    return preset;
  }
  const std::vector<std::string> known = known_presets(dirs);
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  HYDRA_FAIL(ConfigError, loc << ": model.preset: no preset named '" << name << "'" << did_you_mean(name, known)
                              << " (presets: " << (list.empty() ? "none" : list) << ")");
}

}  // namespace hydra::launcher
