// Reading a config or preset file strictly. yaml-cpp accepts some things silently that a
// user cannot have meant (a key given twice keeps one value, a second `---` document is
// dropped); here they stop the run with the file and line (ConfigError, exit 2).
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace hydra::launcher {

// The file's one document: a map of sections, or null for an empty file. Refuses a missing
// file or a directory, a syntax error, several documents, a key that is not a plain name,
// and a key given twice in one map at any depth. `what` ("config file", "preset") names the
// file's role in messages.
YAML::Node load_yaml_file(const std::string& path, const std::string& what);

// "FILE:LINE" of a node, or FILE where the node has no position.
std::string yaml_location(const std::string& file, const YAML::Node& node);

// A value as messages quote it: 'text', "a list", "a map" or "an empty value (null)".
std::string describe_yaml_value(const YAML::Node& node);

}  // namespace hydra::launcher
