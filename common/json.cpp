#include "common/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace hydra::common {

Json& Json::push(Json v) {
  if (kind_ == Kind::kNull) kind_ = Kind::kArray;
  items_.push_back(std::move(v));
  return items_.back();
}

Json& Json::operator[](const std::string& key) {
  if (kind_ == Kind::kNull) kind_ = Kind::kObject;
  for (auto& m : members_) {
    if (m.first == key) return m.second;
  }
  members_.emplace_back(key, Json());
  return members_.back().second;
}

const Json* Json::find(const std::string& key) const {
  for (const auto& m : members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

void Json::set_path(const std::string& dotted, Json v) {
  Json* node = this;
  size_t start = 0;
  for (size_t dot; (dot = dotted.find('.', start)) != std::string::npos; start = dot + 1) {
    node = &(*node)[dotted.substr(start, dot - start)];
  }
  (*node)[dotted.substr(start)] = std::move(v);
}

std::string format_float(double v) {
  if (!std::isfinite(v)) return "null";
  // The shortest of %.15g..%.17g that parses back to the same bits: 0.1 stays "0.1".
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s(buf);
  // Keep floats recognisable as floats ("1.0", not "1").
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

static void escape_to(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

static void newline(std::string& out, int indent, int depth) {
  if (indent < 0) return;
  out += '\n';
  out.append(static_cast<size_t>(indent * depth), ' ');
}

// A container of scalars (and of arrays of scalars) prints on one line even when indenting:
// rank rows, lists and small config sections stay readable.
static bool is_scalar(Json::Kind k) { return k != Json::Kind::kArray && k != Json::Kind::kObject; }

bool Json::is_flat() const {
  auto flat_child = [](const Json& c) {
    if (is_scalar(c.kind_)) return true;
    if (c.kind_ != Kind::kArray) return false;
    for (const auto& i : c.items_) {
      if (!is_scalar(i.kind_)) return false;
    }
    return true;
  };
  for (const auto& i : items_) {
    if (!flat_child(i)) return false;
  }
  for (const auto& m : members_) {
    if (!flat_child(m.second)) return false;
  }
  return true;
}

void Json::dump_to(std::string& out, int indent, int depth) const {
  if (indent >= 0 && (kind_ == Kind::kArray || kind_ == Kind::kObject) && is_flat()) indent = -1;
  switch (kind_) {
    case Kind::kNull: out += "null"; break;
    case Kind::kBool: out += bool_ ? "true" : "false"; break;
    case Kind::kInt: out += std::to_string(int_); break;
    case Kind::kFloat: out += format_float(float_); break;
    case Kind::kString: escape_to(out, string_); break;
    case Kind::kArray: {
      out += '[';
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        newline(out, indent, depth + 1);
        items_[i].dump_to(out, indent, depth + 1);
      }
      if (!items_.empty()) newline(out, indent, depth);
      out += ']';
      break;
    }
    case Kind::kObject: {
      out += '{';
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        newline(out, indent, depth + 1);
        escape_to(out, members_[i].first);
        out += ": ";
        members_[i].second.dump_to(out, indent, depth + 1);
      }
      if (!members_.empty()) newline(out, indent, depth);
      out += '}';
      break;
    }
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

}  // namespace hydra::common
