#include "launcher/config_load.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "common/errors.h"
#include "launcher/config_schema.h"
#include "launcher/nearest_name.h"
#include "launcher/presets.h"
#include "launcher/yaml_file.h"
#include "model/model_checks.h"

namespace hydra::launcher {
namespace {

using common::ConfigError;

// Where a value came from, for messages: "configs/run.yaml:12" or "--set".
std::string where(const std::string& origin, const YAML::Node& node) {
  return origin == "--set" ? origin : yaml_location(origin, node);
}

// Every key and section name, for suggestions.
const std::vector<std::string>& key_and_section_names() {
  static const std::vector<std::string> names = [] {
    std::set<std::string> all;
    for (const auto& spec : config_schema()) {
      const std::string path = spec.path;
      all.insert(path);
      for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1)) {
        all.insert(path.substr(0, dot));
      }
    }
    return std::vector<std::string>(all.begin(), all.end());
  }();
  return names;
}

// The node of `key` itself in `map`, for its line (a null value's position is the next token's).
YAML::Node key_node(const YAML::Node& map, const std::string& key) {
  for (const auto& item : map) {
    if (item.first.Scalar() == key) return item.first;
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

bool is_section(const std::string& prefix) {
  for (const auto& spec : config_schema()) {
    if (std::string(spec.path).rfind(prefix + ".", 0) == 0) return true;
  }
  return false;
}

// Parses one scalar; throws with the expectation on failure.
template <typename T>
T scalar_as(const YAML::Node& node, const KeySpec& spec, const std::string& loc) {
  // A null string is refused like any null: --set's empty value is the one way to say "".
  const std::string got = describe_yaml_value(node) +
                          (node.IsNull() && std::is_same_v<T, std::string> ? " (write \"\" for an empty string)" : "");
  try {
    if (!node.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "not a scalar");
    if constexpr (std::is_same_v<T, int>) {
      const long long v = node.as<long long>();
      if (v < spec.min || v > spec.max) throw YAML::Exception(YAML::Mark::null_mark(), "range");
      return static_cast<int>(v);
    } else if constexpr (std::is_same_v<T, double>) {
      const double v = node.as<double>();
      if (!std::isfinite(v) || v < spec.min || v > spec.max) {
        throw YAML::Exception(YAML::Mark::null_mark(), "range");
      }
      return v;
    } else if constexpr (std::is_same_v<T, bool>) {
      return node.as<bool>();
    } else {
      const std::string v = node.Scalar();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
        throw YAML::Exception(YAML::Mark::null_mark(), "choice");
      }
      return v;
    }
  } catch (const YAML::Exception&) {
    HYDRA_FAIL(ConfigError, loc << ": " << spec.path << ": expected " << describe_expected(spec)
                                << ", got " << got);
  }
}

template <typename T>
std::vector<T> list_as(const YAML::Node& node, const KeySpec& spec, const std::string& loc) {
  if (!node.IsSequence()) {
    HYDRA_FAIL(ConfigError, loc << ": " << spec.path << ": expected " << describe_expected(spec)
                                << ", got " << describe_yaml_value(node));
  }
  std::vector<T> out;
  for (const auto& item : node) out.push_back(scalar_as<T>(item, spec, loc));
  return out;
}

void assign(Config& config, const KeySpec& spec, const YAML::Node& node, const std::string& loc) {
  std::visit(
      [&](auto* member) {
        using Member = std::remove_pointer_t<decltype(member)>;
        if constexpr (std::is_same_v<Member, std::vector<int>>) {
          *member = list_as<int>(node, spec, loc);
        } else if constexpr (std::is_same_v<Member, std::vector<std::string>>) {
          *member = list_as<std::string>(node, spec, loc);
        } else {
          *member = scalar_as<Member>(node, spec, loc);
        }
      },
      spec.field(config));
}

struct Loader {
  Config config;
  std::set<std::string> assigned;  // keys some layer set (for the required check)

  // key: the YAML key node (for the line of an unknown key); undefined for --set.
  void apply(const std::string& path, const YAML::Node& key, const YAML::Node& node,
             const std::string& origin) {
    const KeySpec* spec = find_key(path);
    if (!spec) {
      HYDRA_FAIL(ConfigError, where(origin, key) << ": unknown key '" << path << "'"
                                                 << did_you_mean(path, key_and_section_names()));
    }
    // A null value's position is the next token's; its key's line is the one the user wrote.
    assign(config, *spec, node, where(origin, node.IsNull() ? key : node));
    assigned.insert(path);
  }

  // Walks a YAML map whose keys are below `prefix`; skip names a key to leave out.
  void apply_map(const std::string& prefix, const YAML::Node& map, const std::string& origin,
                 const std::string& skip = "") {
    for (const auto& item : map) {
      const std::string key = item.first.Scalar();  // load_yaml_file refused other keys
      const std::string path = prefix.empty() ? key : prefix + "." + key;
      if (path == skip) continue;
      if (!find_key(path) && is_section(path)) {
        if (item.second.IsNull()) continue;  // an empty section: nothing to set
        if (!item.second.IsMap()) {
          HYDRA_FAIL(ConfigError, where(origin, item.second) << ": " << path << ": expected a map of keys, got "
                                                             << describe_yaml_value(item.second));
        }
        apply_map(path, item.second, origin, skip);
      } else {
        apply(path, item.first, item.second, origin);
      }
    }
  }
};

// Splits "--set key.path=value" and parses the value as YAML (so lists work: [1, 3]).
std::pair<std::string, YAML::Node> parse_set(const std::string& set) {
  const size_t eq = set.find('=');
  if (eq == std::string::npos || eq == 0) {
    HYDRA_FAIL(ConfigError, "--set '" << set << "': expected key.path=value");
  }
  const std::string path = set.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(set.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    HYDRA_FAIL(ConfigError, "--set " << path << ": cannot parse value '" << set.substr(eq + 1) << "': " << e.msg);
  }
  if (!find_key(path) && is_section(path)) {
    HYDRA_FAIL(ConfigError, "--set " << path << ": a section, not a key; set its keys one by one (--set " << path
                                     << ".KEY=value)");
  }
  if (!find_key(path)) {
    HYDRA_FAIL(ConfigError, "--set: unknown key '" << path << "'" << did_you_mean(path, key_and_section_names()));
  }
  Config probe;
  if (value.IsNull() && std::holds_alternative<std::string*>(find_key(path)->field(probe))) {
    value = YAML::Node(std::string());  // "--set data.path=" means the empty string
  }
  return {path, value};
}

}  // namespace

Config load_config(const std::string& config_path, const std::vector<std::string>& sets, BuildCheck build) {
  Loader loader;
  const YAML::Node root = config_path.empty() ? YAML::Node() : load_yaml_file(config_path, "config file");
  std::vector<std::pair<std::string, YAML::Node>> overrides;
  for (const auto& set : sets) overrides.push_back(parse_set(set));

  // The preset is resolved first because it sits below the file in precedence; the last
  // word on its name may come from --set.
  std::string preset_loc = config_path;  // where the preset's name was given
  if (root.IsMap() && root["model"] && root["model"].IsMap() && root["model"]["preset"]) {
    const YAML::Node key = key_node(root["model"], "preset");
    loader.apply("model.preset", key, root["model"]["preset"], config_path);
    preset_loc = where(config_path, key);
  }
  for (const auto& [path, value] : overrides) {
    if (path == "model.preset") {
      loader.apply(path, YAML::Node(), value, "--set");
      preset_loc = "--set";
    }
  }
  const std::string& preset = loader.config.model.preset;
  if (!preset.empty()) {
    const PresetFile found = find_preset(preset, config_path, preset_loc);
    loader.apply_map("model", found.root["model"], found.path);
  }
  if (root.IsMap()) loader.apply_map("", root, config_path, "model.preset");
  for (const auto& [path, value] : overrides) {
    if (path != "model.preset") loader.apply(path, YAML::Node(), value, "--set");
  }

  for (const auto& spec : config_schema()) {
    if (spec.required && !loader.assigned.count(spec.path)) {
      HYDRA_FAIL(ConfigError, (config_path.empty() ? std::string("config") : config_path)
                                  << ": missing required key " << spec.path << " (" << spec.help
                                  << "; set it, name a model.preset, or pass --set " << spec.path << "=...)");
    }
  }
#ifdef HYDRA_CUDA
  // The CUDA build runs CCQA on the fused kernels by default; a CPU run (or an explicit
  // setting) keeps what it has, so the default never trips the fused-needs-cuda check.
  if (!loader.assigned.count("model.ccqa.kernel") && loader.config.train.device == "cuda") {
    loader.config.model.ccqa.kernel = "fused";
  }
#endif
  loader.config.source = config_path;
  check_config(loader.config, build);
  return loader.config;
}

void check_config(const Config& c, BuildCheck build) {
  const std::string loc = c.source.empty() ? "config" : c.source;
  try {
    model::check_model_config(c.model);
    model::check_tensor_parallel(c.model, c.parallel.tp);
  } catch (const ConfigError& e) {
    HYDRA_FAIL(ConfigError, loc << ": " << e.what());
  }
  if (c.train.min_lr > c.train.lr) {
    HYDRA_FAIL(ConfigError, loc << ": train.min_lr " << c.train.min_lr << " exceeds train.lr " << c.train.lr);
  }
#ifndef HYDRA_CUDA
  if (c.train.device == "cuda" && build == BuildCheck::kThisBuild) {
    HYDRA_FAIL(ConfigError, loc << ": train.device: cuda needs the CUDA build (cmake -DHYDRA_CUDA=ON); this is the CPU build");
  }
  if (c.parallel.backend == "nccl" && build == BuildCheck::kThisBuild) {
    HYDRA_FAIL(ConfigError, loc << ": parallel.backend: nccl needs the CUDA build; use mpi or auto");
  }
#endif
  if (c.train.device == "cpu" && c.parallel.backend == "nccl") {
    HYDRA_FAIL(ConfigError, loc << ": parallel.backend: nccl needs train.device: cuda");
  }
  if (c.parallel.sequence_parallel) {
    // Refused rather than ignored: a run that asked for it must not silently train without.
    HYDRA_FAIL(ConfigError, loc << ": parallel.sequence_parallel: true is not implemented yet (MoD and MoR route "
                                   "over whole sequences); leave it false");
  }
  if (c.model.ccqa.kernel == "fused" && c.train.device != "cuda") {
    HYDRA_FAIL(ConfigError, loc << ": model.ccqa.kernel: fused needs train.device: cuda (use reference)");
  }
}

common::Json config_to_json(const Config& config) {
  common::Json out = common::Json::object();
  Config copy = config;  // field() hands out non-const pointers; read through a copy
  for (const auto& spec : config_schema()) {
    std::visit(
        [&](auto* member) {
          using Member = std::remove_pointer_t<decltype(member)>;
          if constexpr (std::is_same_v<Member, std::vector<int>> ||
                        std::is_same_v<Member, std::vector<std::string>>) {
            common::Json list = common::Json::array();
            for (const auto& v : *member) list.push(v);
            out.set_path(spec.path, list);
          } else {
            out.set_path(spec.path, *member);
          }
        },
        spec.field(copy));
  }
  return out;
}

}  // namespace hydra::launcher
