// The GPT-2 pre-tokeniser: splits text into the pieces that byte-pair encoding works on,
// exactly as JavaScript evaluates GPT-2's pattern with the `u` flag,
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// written out by hand (no regex engine): at each position the first alternative that
// matches wins, each `+` is greedy, and `\s+(?!\S)` gives back one whitespace character when
// non-whitespace follows.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace hydra::data {

struct Piece {
  size_t begin;  // byte offsets into the text
  size_t end;
};

// Appends the pieces of text, in order; they tile the text. text must be valid UTF-8.
void split_gpt2_pieces(std::string_view text, std::vector<Piece>& pieces);

// Whether a document may be cut at byte offset pos without changing its pieces (so that
// its parts can be encoded independently): text[pos - 1] is '\n' and neither the character
// before it nor the one at pos is whitespace. That '\n' is then a piece of its own whether
// or not text follows, and a piece starts at pos.
bool is_safe_split(std::string_view text, size_t pos);

}  // namespace hydra::data
