#include "data/manifest.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/errors.h"
#include "common/json.h"
#include "data/json_reader.h"

namespace hydra::data {
namespace {

using common::InputError;

constexpr const char* kFormat = "hydra-token-shards";
constexpr int kVersion = 1;

common::Json shard_list(const std::vector<ShardEntry>& shards) {
  common::Json list = common::Json::array();
  for (const auto& s : shards) {
    common::Json entry = common::Json::object();
    entry["file"] = s.file;
    entry["tokens"] = s.tokens;
    list.push(entry);
  }
  return list;
}

const JsonValue& member(const JsonValue& object, const std::string& key, JsonValue::Kind kind,
                        const std::string& path) {
  const JsonValue* v = object.find(key);
  if (!v) HYDRA_FAIL(InputError, path << ": missing key \"" << key << "\"");
  if (v->kind() != kind) {
    HYDRA_FAIL(InputError, path << ": \"" << key << "\" is " << JsonValue::kind_name(v->kind())
                                << ", expected " << JsonValue::kind_name(kind));
  }
  return *v;
}

int64_t integer(const JsonValue& object, const std::string& key, int64_t min, int64_t max,
                const std::string& path) {
  const JsonValue& v = member(object, key, JsonValue::Kind::kNumber, path);
  if (!v.is_integer() || v.as_int() < min || v.as_int() > max) {
    HYDRA_FAIL(InputError, path << ": \"" << key << "\" must be an integer in [" << min << ", " << max << "]");
  }
  return v.as_int();
}

std::vector<ShardEntry> read_shard_list(const JsonValue& root, const std::string& key, const std::string& path) {
  std::vector<ShardEntry> shards;
  const JsonValue& list = member(root, key, JsonValue::Kind::kArray, path);
  for (size_t i = 0; i < list.items().size(); ++i) {
    const JsonValue& item = list.items()[i];
    const std::string where = key + "[" + std::to_string(i) + "]";
    if (!item.is_object()) HYDRA_FAIL(InputError, path << ": \"" << where << "\" must be an object");
    ShardEntry entry;
    entry.file = member(item, "file", JsonValue::Kind::kString, path + " " + where).as_string();
    if (entry.file.empty() || entry.file.find('/') != std::string::npos) {
      HYDRA_FAIL(InputError, path << ": \"" << where << ".file\" must be a file name in the dataset directory");
    }
    entry.tokens = static_cast<uint64_t>(integer(item, "tokens", 0, INT64_MAX, path + " " + where));
    shards.push_back(std::move(entry));
  }
  return shards;
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& content) {
  const size_t slash = path.rfind('/');
  const std::string temp = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + "." +
                           path.substr(slash == std::string::npos ? 0 : slash + 1) + ".tmp";
  FILE* f = std::fopen(temp.c_str(), "wb");
  if (!f) HYDRA_FAIL(InputError, "cannot create " << temp << ": " << std::strerror(errno));
  const bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size() &&
                  std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    HYDRA_FAIL(common::RuntimeFailure, "writing " << path << ": " << std::strerror(err));
  }
}

void write_manifest(const std::string& dir, const Manifest& m) {
  common::Json root = common::Json::object();
  root["format"] = kFormat;
  root["version"] = kVersion;
  root["tokenizer"] = m.tokenizer;
  root["vocab_size"] = m.vocab_size;
  root["eot_id"] = m.eot_id;
  root["token_bytes"] = static_cast<int>(m.token_bytes);
  root["documents"] = m.documents;
  root["val_fraction"] = m.val_fraction;
  root["train"] = shard_list(m.train);
  root["val"] = shard_list(m.val);
  write_file_atomically(dir + "/" + kManifestName, root.dump(2) + "\n");
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    HYDRA_FAIL(InputError, path << ": cannot read (is " << dir
                                << " a directory written by `hydra data prepare`?)");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  const JsonParseResult parsed = parse_json(ss.str());
  if (!parsed.ok) {
    HYDRA_FAIL(InputError, path << ": not valid JSON at byte " << parsed.error_offset << ": " << parsed.error);
  }
  const JsonValue& root = parsed.value;
  if (!root.is_object()) HYDRA_FAIL(InputError, path << ": expected a JSON object");
  const std::string format = member(root, "format", JsonValue::Kind::kString, path).as_string();
  if (format != kFormat) HYDRA_FAIL(InputError, path << ": \"format\" is \"" << format << "\", expected \"" << kFormat << "\"");
  const int64_t version = integer(root, "version", 0, INT32_MAX, path);
  if (version != kVersion) HYDRA_FAIL(InputError, path << ": version " << version << ", this build reads " << kVersion);

  Manifest m;
  m.tokenizer = member(root, "tokenizer", JsonValue::Kind::kString, path).as_string();
  m.vocab_size = static_cast<int32_t>(integer(root, "vocab_size", 1, INT32_MAX, path));
  m.eot_id = static_cast<int32_t>(integer(root, "eot_id", 0, m.vocab_size - 1, path));
  m.token_bytes = static_cast<uint32_t>(integer(root, "token_bytes", 2, 4, path));
  m.documents = static_cast<uint64_t>(integer(root, "documents", 0, INT64_MAX, path));
  m.val_fraction = member(root, "val_fraction", JsonValue::Kind::kNumber, path).as_double();
  m.train = read_shard_list(root, "train", path);
  m.val = read_shard_list(root, "val", path);
  return m;
}

}  // namespace hydra::data
