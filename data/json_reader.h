// A small JSON reader for the three kinds of JSON that data/ reads: the GPT-2 tokenizer's
// encoder.json, JSON Lines corpora and manifest.json. (common/json.h only writes JSON.)
// Strict RFC 8259: no comments, no trailing commas, strings must be valid UTF-8 and may
// not contain raw control characters or unpaired surrogate escapes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hydra::data {

class JsonValue {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  Kind kind() const { return kind_; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_array() const { return kind_ == Kind::kArray; }
  // Numbers without fraction or exponent that fit in int64 are exact.
  bool is_integer() const { return kind_ == Kind::kNumber && is_integer_; }

  const std::string& as_string() const { return string_; }
  int64_t as_int() const { return int_; }
  double as_double() const { return number_; }
  bool as_bool() const { return bool_; }
  const std::vector<JsonValue>& items() const { return items_; }
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }
  // The first member named key, or nullptr (also when this is not an object).
  const JsonValue* find(std::string_view key) const;

  // Describes the kind for messages: "a string", "an object", ...
  static const char* kind_name(Kind kind);

 private:
  friend class JsonParser;
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  bool is_integer_ = false;
  int64_t int_ = 0;
  double number_ = 0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

struct JsonParseResult {
  bool ok = false;
  JsonValue value;
  size_t error_offset = 0;  // byte offset of the problem when !ok
  std::string error;        // what was expected there
};

JsonParseResult parse_json(std::string_view text);

}  // namespace hydra::data
