#include "data/json_reader.h"

#include <cerrno>
#include <cstdlib>

#include "data/utf8.h"

namespace hydra::data {

const JsonValue* JsonValue::find(std::string_view key) const {
  for (const auto& m : members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

const char* JsonValue::kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNull: return "null";
    case Kind::kBool: return "a boolean";
    case Kind::kNumber: return "a number";
    case Kind::kString: return "a string";
    case Kind::kArray: return "an array";
    case Kind::kObject: return "an object";
  }
  return "?";
}

namespace {
struct SyntaxError {
  size_t offset;
  std::string what;
};
constexpr int kMaxDepth = 256;
}  // namespace

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  JsonValue parse_document() {
    JsonValue v = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("end of input after the value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& expected) { throw SyntaxError{pos_, "expected " + expected}; }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) return ++pos_, true;
    return false;
  }

  void expect_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail(std::string("'") + std::string(word) + "'");
    pos_ += word.size();
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) fail("at most 256 levels of nesting");
    skip_space();
    if (pos_ >= text_.size()) fail("a value");
    JsonValue v;
    switch (text_[pos_]) {
      case '{': parse_object(v, depth); break;
      case '[': parse_array(v, depth); break;
      case '"': v.kind_ = JsonValue::Kind::kString; v.string_ = parse_string(); break;
      case 't': expect_word("true"); v.kind_ = JsonValue::Kind::kBool; v.bool_ = true; break;
      case 'f': expect_word("false"); v.kind_ = JsonValue::Kind::kBool; break;
      case 'n': expect_word("null"); break;
      default: parse_number(v); break;
    }
    return v;
  }

  void parse_object(JsonValue& v, int depth) {
    v.kind_ = JsonValue::Kind::kObject;
    ++pos_;  // '{'
    skip_space();
    if (consume('}')) return;
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') fail("a member name in double quotes");
      std::string key = parse_string();
      skip_space();
      if (!consume(':')) fail("':' after a member name");
      v.members_.emplace_back(std::move(key), parse_value(depth + 1));
      skip_space();
      if (consume('}')) return;
      if (!consume(',')) fail("',' or '}' in an object");
    }
  }

  void parse_array(JsonValue& v, int depth) {
    v.kind_ = JsonValue::Kind::kArray;
    ++pos_;  // '['
    skip_space();
    if (consume(']')) return;
    for (;;) {
      v.items_.push_back(parse_value(depth + 1));
      skip_space();
      if (consume(']')) return;
      if (!consume(',')) fail("',' or ']' in an array");
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > text_.size()) fail("four hex digits after \\u");
    uint32_t value = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_ + k];
      value <<= 4;
      if (c >= '0' && c <= '9') value |= c - '0';
      else if (c >= 'a' && c <= 'f') value |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
      else fail("four hex digits after \\u");
    }
    pos_ += 4;
    return value;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      // Copy the plain run up to the next quote, backslash or control character.
      size_t run = pos_;
      while (run < text_.size() && text_[run] != '"' && text_[run] != '\\' &&
             static_cast<unsigned char>(text_[run]) >= 0x20) {
        ++run;
      }
      const std::string_view plain = text_.substr(pos_, run - pos_);
      const size_t bad = find_invalid_utf8(plain);
      if (bad != std::string_view::npos) {
        pos_ += bad;
        fail("valid UTF-8 in a string");
      }
      out.append(plain);
      pos_ = run;
      if (pos_ >= text_.size()) fail("a closing '\"'");
      const char c = text_[pos_];
      if (c == '"') return ++pos_, out;
      if (c != '\\') fail("no raw control characters in a string (escape them)");
      ++pos_;
      if (pos_ >= text_.size()) fail("an escape after '\\'");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("a high surrogate before the low surrogate \\u" + hex(cp));
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") fail("a low surrogate escape after \\u" + hex(cp));
            pos_ += 2;
            const uint32_t low = parse_hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("a low surrogate after \\u" + hex(cp));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          fail("one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u");
      }
    }
  }

  static std::string hex(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    std::string s(4, '0');
    for (int k = 3; k >= 0; --k, v >>= 4) s[k] = digits[v & 15];
    return s;
  }

  void parse_number(JsonValue& v) {
    const size_t start = pos_;
    const auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    consume('-');
    if (pos_ >= text_.size() || !(text_[pos_] >= '0' && text_[pos_] <= '9')) fail("a value");
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      digits();
    }
    bool integral = true;
    if (consume('.')) {
      integral = false;
      if (digits() == 0) fail("digits after '.'");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (!consume('+')) consume('-');
      if (digits() == 0) fail("digits in the exponent");
    }
    const std::string literal(text_.substr(start, pos_ - start));
    v.kind_ = JsonValue::Kind::kNumber;
    v.number_ = std::strtod(literal.c_str(), nullptr);
    if (integral) {
      errno = 0;
      const long long i = std::strtoll(literal.c_str(), nullptr, 10);
      if (errno == 0) v.is_integer_ = true, v.int_ = i;
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

JsonParseResult parse_json(std::string_view text) {
  JsonParseResult result;
  try {
    result.value = JsonParser(text).parse_document();
    result.ok = true;
  } catch (const SyntaxError& e) {
    result.error_offset = e.offset;
    result.error = e.what;
  }
  return result;
}

}  // namespace hydra::data
