// A small JSON value for the outputs users and scripts read: `hydra info --json`, the
// metrics file, `hydra ckpt inspect --json`. Objects keep insertion order so the output
// reads in the same order as the config. Floats print so that they parse back to the same
// bits (round trip), as the metrics file needs for bit-for-bit comparisons.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hydra::common {

class Json {
 public:
  enum class Kind { kNull, kBool, kInt, kFloat, kString, kArray, kObject };

  Json() = default;  // null
  Json(bool b) : kind_(Kind::kBool), bool_(b) {}
  Json(int v) : kind_(Kind::kInt), int_(v) {}
  Json(int64_t v) : kind_(Kind::kInt), int_(v) {}
  Json(uint64_t v) : kind_(Kind::kInt), int_(static_cast<int64_t>(v)) {}
  Json(double v) : kind_(Kind::kFloat), float_(v) {}
  Json(const char* s) : kind_(Kind::kString), string_(s) {}
  Json(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}

  static Json array() { Json j; j.kind_ = Kind::kArray; return j; }
  static Json object() { Json j; j.kind_ = Kind::kObject; return j; }

  Kind kind() const { return kind_; }
  // Appends to an array.
  Json& push(Json v);
  // Object member access; inserts a null member when absent (keeps insertion order).
  Json& operator[](const std::string& key);
  const Json* find(const std::string& key) const;
  // Sets a member at a dotted path ("model.ccqa.compression"), creating objects on the way.
  void set_path(const std::string& dotted, Json v);

  std::string dump(int indent = -1) const;  // indent < 0: one line

 private:
  void dump_to(std::string& out, int indent, int depth) const;
  bool is_flat() const;

  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// Formats a double so that parsing it back gives the same bits (the shortest %.15g-%.17g
// that round-trips); non-finite
// values become null in JSON, which has no NaN.
std::string format_float(double v);

}  // namespace hydra::common
