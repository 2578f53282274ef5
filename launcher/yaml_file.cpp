#include "launcher/yaml_file.h"

#include <filesystem>
#include <map>
#include <vector>

#include "common/errors.h"

namespace hydra::launcher {
namespace {

namespace fs = std::filesystem;
using common::ConfigError;

void check_readable(const std::string& path, const std::string& what) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found || ec) {
    HYDRA_FAIL(ConfigError, path << ": cannot read " << what << " (no such file)");
  }
  if (status.type() == fs::file_type::directory) {
    HYDRA_FAIL(ConfigError, path << ": cannot read " << what << ": it is a directory, not a YAML file");
  }
  if (status.type() != fs::file_type::regular) {
    HYDRA_FAIL(ConfigError, path << ": cannot read " << what << ": not a regular file");
  }
}

std::vector<YAML::Node> parse_documents(const std::string& path, const std::string& what) {
  try {
    return YAML::LoadAllFromFile(path);
  } catch (const YAML::ParserException& e) {
    HYDRA_FAIL(ConfigError, path << ":" << e.mark.line + 1 << ":" << e.mark.column + 1
                                 << ": YAML syntax error: " << e.msg);
  } catch (const YAML::Exception& e) {
    HYDRA_FAIL(ConfigError, path << ": cannot read " << what << ": " << e.what());
  }
}

// Walks every map below `node`; `at` is the dotted path of `node` ("" at the top).
void check_keys(const YAML::Node& node, const std::string& at, const std::string& file) {
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) check_keys(node[i], at + "[" + std::to_string(i) + "]", file);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, YAML::Node> seen;  // key -> its first key node (for the line)
  for (const auto& item : node) {
    if (!item.first.IsScalar()) {
      HYDRA_FAIL(ConfigError, yaml_location(file, item.first)
                                  << ": " << (at.empty() ? "top level" : at) << ": a key must be a plain name, got "
                                  << describe_yaml_value(item.first));
    }
    const std::string key = item.first.Scalar();
    const std::string path = at.empty() ? key : at + "." + key;
    if (const auto first = seen.find(key); first != seen.end()) {
      HYDRA_FAIL(ConfigError, yaml_location(file, item.first)
                                  << ": duplicate key '" << path << "' (first at "
                                  << yaml_location(file, first->second)
                                  << "); YAML would keep only one of the values: remove the other");
    }
    seen.emplace(key, item.first);
    check_keys(item.second, path, file);
  }
}

}  // namespace

std::string yaml_location(const std::string& file, const YAML::Node& node) {
  if (!node.IsDefined() || node.Mark().line < 0) return file;
  return file + ":" + std::to_string(node.Mark().line + 1);
}

std::string describe_yaml_value(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  return "an empty value (null)";
}

YAML::Node load_yaml_file(const std::string& path, const std::string& what) {
  check_readable(path, what);
  const std::vector<YAML::Node> documents = parse_documents(path, what);
  if (documents.size() > 1) {
    HYDRA_FAIL(ConfigError, yaml_location(path, documents[1])
                                << ": a second YAML document (after '---'); a " << what
                                << " holds one, and the second would be ignored");
  }
  const YAML::Node root = documents.empty() ? YAML::Node() : documents[0];
  if (!root.IsNull() && !root.IsMap()) {
    HYDRA_FAIL(ConfigError, yaml_location(path, root) << ": expected a map of sections at the top level, got "
                                                       << describe_yaml_value(root));
  }
  check_keys(root, "", path);
  return root;
}

}  // namespace hydra::launcher
