#include "data/utf8.h"

#include <algorithm>
#include <array>

namespace hydra::data {
namespace {

struct CodePointRange {
  uint32_t first;
  uint32_t last;
};

#include "data/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], uint32_t cp) {
  // First range whose last >= cp; cp is inside when that range starts at or below it.
  const CodePointRange* it = std::lower_bound(
      ranges, ranges + N, cp, [](const CodePointRange& r, uint32_t v) { return r.last < v; });
  return it != ranges + N && it->first <= cp;
}

bool is_js_space(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
    case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

CharClass classify_slow(uint32_t cp) {
  if (is_js_space(cp)) return CharClass::kSpace;
  if (in_ranges(kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

// ASCII and Latin-1 are most of the text; look them up directly.
const std::array<CharClass, 256>& latin1_classes() {
  static const std::array<CharClass, 256> table = [] {
    std::array<CharClass, 256> t{};
    for (uint32_t cp = 0; cp < 256; ++cp) t[cp] = classify_slow(cp);
    return t;
  }();
  return table;
}

}  // namespace

size_t decode_utf8(std::string_view text, size_t pos, uint32_t* cp) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t need;
  uint8_t lower = 0x80, upper = 0xBF;
  uint32_t value;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, value = b0 & 0x0F;
    if (b0 == 0xE0) lower = 0xA0;  // no overlongs
    if (b0 == 0xED) upper = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, value = b0 & 0x07;
    if (b0 == 0xF0) lower = 0x90;  // no overlongs
    if (b0 == 0xF4) upper = 0x8F;  // nothing above U+10FFFF
  } else {
    *cp = kInvalidCodePoint;  // continuation byte, C0, C1, F5..FF
    return 1;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (pos + k >= text.size() || byte(pos + k) < lower || byte(pos + k) > upper) {
      *cp = kInvalidCodePoint;  // the maximal subpart ends before this byte
      return k;
    }
    value = (value << 6) | (byte(pos + k) & 0x3F);
    lower = 0x80, upper = 0xBF;
  }
  *cp = value;
  return need + 1;
}

size_t find_invalid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // Skip ASCII eight bytes at a time.
    while (pos + 8 <= text.size()) {
      uint64_t word;
      std::copy(text.data() + pos, text.data() + pos + 8, reinterpret_cast<char*>(&word));
      if (word & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    uint32_t cp;
    const size_t len = decode_utf8(text, pos, &cp);
    if (cp == kInvalidCodePoint) return pos;
    pos += len;
  }
  return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  size_t pos = 0;
  while (pos < text.size()) {
    uint32_t cp;
    const size_t len = decode_utf8(text, pos, &cp);
    if (cp == kInvalidCodePoint) {
      append_utf8(out, kReplacementChar);
    } else {
      out.append(text.data() + pos, len);
    }
    pos += len;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

CharClass classify(uint32_t cp) {
  if (cp < 256) return latin1_classes()[cp];
  return classify_slow(cp);
}

}  // namespace hydra::data
