#include "data/pretokenize.h"

#include "data/utf8.h"

namespace hydra::data {
namespace {

// Length in bytes of a contraction ('s 't 're 've 'm 'll 'd) at text[pos], or 0.
size_t contraction_length(std::string_view text, size_t pos) {
  if (text[pos] != '\'' || pos + 1 >= text.size()) return 0;
  const char c1 = text[pos + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= text.size()) return 0;
  const char c2 = text[pos + 2];
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

}  // namespace

void split_gpt2_pieces(std::string_view text, std::vector<Piece>& pieces) {
  // Decode once: the class and byte offset of every code point (offset[n] = text.size()).
  thread_local std::vector<CharClass> cls;
  thread_local std::vector<size_t> offset;
  cls.clear();
  offset.clear();
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const size_t len = decode_utf8(text, pos, &cp);
    cls.push_back(cp == kInvalidCodePoint ? CharClass::kOther : classify(cp));
    offset.push_back(pos);
    pos += len;
  }
  const size_t n = cls.size();
  offset.push_back(text.size());

  const auto is_blank = [&](size_t i) { return text[offset[i]] == ' '; };  // U+0020 only
  const auto run_end = [&](size_t i, CharClass c) {
    while (i < n && cls[i] == c) ++i;
    return i;
  };

  size_t i = 0;
  while (i < n) {
    size_t end;
    if (const size_t len = contraction_length(text, offset[i])) {
      end = i + len;  // contractions are ASCII: one code point per byte
    } else if (cls[i] != CharClass::kSpace ||
               (is_blank(i) && i + 1 < n && cls[i + 1] != CharClass::kSpace)) {
      // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional blank, then a run of one class.
      const size_t first = cls[i] == CharClass::kSpace ? i + 1 : i;
      end = run_end(first, cls[first]);
    } else {
      // `\s+(?!\S)` then `\s+`: the whitespace run, less its last character when that is
      // followed by non-whitespace and the run has more than one character.
      const size_t run = run_end(i, CharClass::kSpace);
      end = (run < n && run - i >= 2) ? run - 1 : run;
    }
    pieces.push_back({offset[i], offset[end]});
    i = end;
  }
}

bool is_safe_split(std::string_view text, size_t pos) {
  if (pos < 2 || pos >= text.size() || text[pos - 1] != '\n') return false;
  const auto not_space_at = [&](size_t at) {
    uint32_t cp;
    decode_utf8(text, at, &cp);
    return cp != kInvalidCodePoint && classify(cp) != CharClass::kSpace;
  };
  // The character before the '\n' starts at most three continuation bytes earlier.
  size_t start = pos - 2;
  while (start > 0 && pos - 2 - start < 3 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return not_space_at(start) && not_space_at(pos);
}

}  // namespace hydra::data
