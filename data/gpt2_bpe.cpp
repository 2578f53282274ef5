#include "data/gpt2_bpe.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <unordered_map>

#include "common/errors.h"
#include "data/json_reader.h"
#include "data/pretokenize.h"
#include "data/utf8.h"

namespace hydra::data {
namespace {

using common::InputError;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    HYDRA_FAIL(InputError, "gpt2 tokenizer: cannot read " << path
                               << " (run scripts/fetch-tokenizer.sh to fetch encoder.json and vocab.bpe)");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// GPT-2's byte <-> printable character table (bytes_to_unicode in encoder.py): printable
// Latin-1 bytes stand for themselves, the other 68 bytes for U+0100..U+0143 in byte order.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : next++;
  }
  return table;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

uint64_t slot_of(uint64_t key, uint64_t mask) { return (key * 0x9E3779B97F4A7C15ULL >> 20) & mask; }

}  // namespace

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir) {
  read_encoder(dir + "/encoder.json");
  read_merges(dir + "/vocab.bpe");
}

void Gpt2Tokenizer::read_encoder(const std::string& path) {
  const std::string text = read_file(path);
  const JsonParseResult parsed = parse_json(text);
  if (!parsed.ok) {
    HYDRA_FAIL(InputError, path << ": not valid JSON at byte " << parsed.error_offset << ": " << parsed.error);
  }
  if (!parsed.value.is_object()) HYDRA_FAIL(InputError, path << ": expected an object of token -> id");
  const auto& members = parsed.value.members();
  const size_t n = members.size();
  token_bytes_.assign(n, std::string());
  token_keys_.assign(n, std::string());
  std::vector<bool> seen(n, false);

  const std::array<uint32_t, 256> to_cp = byte_to_code_point();
  std::unordered_map<uint32_t, unsigned char> to_byte;
  for (uint32_t b = 0; b < 256; ++b) to_byte[to_cp[b]] = static_cast<unsigned char>(b);

  for (const auto& [key, value] : members) {
    if (!value.is_integer() || value.as_int() < 0 || value.as_int() >= static_cast<int64_t>(n)) {
      HYDRA_FAIL(InputError, path << ": token \"" << key << "\" has id " << value.as_double()
                                  << "; expected distinct integers 0.." << n - 1);
    }
    const size_t id = static_cast<size_t>(value.as_int());
    if (seen[id]) HYDRA_FAIL(InputError, path << ": id " << id << " is used twice");
    seen[id] = true;
    std::string bytes;
    for (size_t pos = 0; pos < key.size();) {
      uint32_t cp;
      pos += decode_utf8(key, pos, &cp);
      const auto it = to_byte.find(cp);
      if (it == to_byte.end()) {
        HYDRA_FAIL(InputError, path << ": token \"" << key << "\" has a character outside GPT-2's byte alphabet");
      }
      bytes += static_cast<char>(it->second);
    }
    token_bytes_[id] = std::move(bytes);
    token_keys_[id] = key;
    if (key == "<|endoftext|>") eot_id_ = static_cast<int32_t>(id);
  }
  if (eot_id_ < 0) HYDRA_FAIL(InputError, path << ": no \"<|endoftext|>\" token");

  std::unordered_map<std::string, int32_t> id_of;
  for (size_t id = 0; id < n; ++id) id_of.emplace(token_keys_[id], static_cast<int32_t>(id));
  for (uint32_t b = 0; b < 256; ++b) {
    std::string key;
    append_utf8(key, to_cp[b]);
    const auto it = id_of.find(key);
    if (it == id_of.end()) HYDRA_FAIL(InputError, path << ": no token for byte " << b);
    byte_id_[b] = it->second;
  }
}

void Gpt2Tokenizer::read_merges(const std::string& path) {
  const std::string text = read_file(path);
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t id = 0; id < token_keys_.size(); ++id) id_of.emplace(token_keys_[id], static_cast<int32_t>(id));

  struct Rule {
    int32_t left, right, merged;
  };
  std::vector<Rule> rules;
  std::istringstream lines(text);
  std::string line;
  for (int64_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;  // "#version: 0.2"
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string left, right, extra;
    if (!(fields >> left >> right) || (fields >> extra)) {
      HYDRA_FAIL(InputError, path << ":" << line_no << ": expected two symbols separated by a space");
    }
    const auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    if (l == id_of.end() || r == id_of.end() || m == id_of.end()) {
      HYDRA_FAIL(InputError, path << ":" << line_no << ": \"" << left << "\", \"" << right
                                  << "\" or their merge is not in encoder.json");
    }
    rules.push_back({l->second, r->second, m->second});
  }
  if (rules.empty()) HYDRA_FAIL(InputError, path << ": no merges");

  // Every token must be complete before a merge uses it (see the header).
  std::vector<int64_t> last_producer(token_bytes_.size(), -1);
  for (size_t rank = 0; rank < rules.size(); ++rank) {
    last_producer[rules[rank].merged] = static_cast<int64_t>(rank);
  }
  for (size_t rank = 0; rank < rules.size(); ++rank) {
    for (int32_t part : {rules[rank].left, rules[rank].right}) {
      if (last_producer[part] > static_cast<int64_t>(rank)) {
        HYDRA_FAIL(InputError, path << ": merge " << rank << " uses \"" << token_keys_[part]
                                    << "\", which merge " << last_producer[part]
                                    << " builds later; this encoder needs tokens built before use");
      }
    }
  }

  size_t capacity = 1;
  while (capacity < rules.size() * 2) capacity <<= 1;
  merges_.assign(capacity, Merge{});
  merge_mask_ = capacity - 1;
  for (size_t rank = 0; rank < rules.size(); ++rank) {
    const uint64_t key = pair_key(rules[rank].left, rules[rank].right);
    uint64_t slot = slot_of(key, merge_mask_);
    while (merges_[slot].key != kEmpty && merges_[slot].key != key) slot = (slot + 1) & merge_mask_;
    if (merges_[slot].key == key) continue;  // a repeated pair keeps its first (lowest) rank
    merges_[slot] = Merge{key, static_cast<int32_t>(rank), rules[rank].merged};
  }
  token_keys_.clear();
  token_keys_.shrink_to_fit();
}

const Gpt2Tokenizer::Merge* Gpt2Tokenizer::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (uint64_t slot = slot_of(key, merge_mask_);; slot = (slot + 1) & merge_mask_) {
    const Merge& m = merges_[slot];
    if (m.key == key) return &m;
    if (m.key == kEmpty) return nullptr;
  }
}

void Gpt2Tokenizer::encode_piece(const unsigned char* bytes, size_t n, std::vector<int32_t>& ids) const {
  if (n == 1) {
    ids.push_back(byte_id_[bytes[0]]);
    return;
  }
  // Symbols form a linked list over the piece's byte positions; a merge keeps the left one.
  struct Symbol {
    int32_t id, prev, next;
  };
  // A mergeable neighbour pair; stale once either side has changed.
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;
  sym.resize(n);
  heap.clear();
  const auto count = static_cast<int32_t>(n);
  for (int32_t i = 0; i < count; ++i) sym[i] = {byte_id_[bytes[i]], i - 1, i + 1 < count ? i + 1 : -1};
  const auto consider = [&](int32_t left, int32_t right) {
    if (const Merge* m = find_merge(sym[left].id, sym[right].id)) {
      heap.push_back({m->rank, left, right, sym[left].id, sym[right].id, m->merged});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < count; ++i) consider(i, i + 1);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = sym[c.left];
    if (left.id != c.left_id || left.next != c.right || sym[c.right].id != c.right_id) continue;
    left.id = c.merged;
    left.next = sym[c.right].next;
    if (left.next >= 0) sym[left.next].prev = c.left;
    sym[c.right].id = -1;
    if (left.prev >= 0) consider(left.prev, c.left);
    if (left.next >= 0) consider(c.left, left.next);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& ids) const {
  std::string repaired;
  if (find_invalid_utf8(text) != std::string_view::npos) {
    repaired = replace_invalid_utf8(text);
    text = repaired;
  }
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  split_gpt2_pieces(text, pieces);
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  for (const Piece& p : pieces) encode_piece(base + p.begin, p.end - p.begin, ids);
}

std::string Gpt2Tokenizer::decode(const int32_t* ids, size_t count) const {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      HYDRA_FAIL(InputError, "gpt2 tokenizer: token id " << ids[i] << " at position " << i
                                 << " is outside [0, " << vocab_size() << ")");
    }
    out += token_bytes_[ids[i]];
  }
  return out;
}

}  // namespace hydra::data
