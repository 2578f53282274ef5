// GPT-2's byte-level BPE: the tokenizer behind load_tokenizer("gpt2", dir).
//
// Invariants the encoder relies on (checked when the files are read, InputError otherwise):
// encoder.json maps N distinct strings to the ids 0..N-1 and has "<|endoftext|>"; each of
// the 256 byte symbols is a token; every merge in vocab.bpe joins two tokens into a token;
// and every token is built by merges ranked before any merge that uses it. The last one
// makes "merge the lowest-ranked pair, leftmost first, one at a time" (a heap, O(n log n)
// for a word of n bytes) give exactly the result of GPT-2's encoder.py, which merges every
// occurrence of the lowest-ranked pair per round (O(n^2)).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace hydra::data {

class Gpt2Tokenizer : public Tokenizer {
 public:
  // Reads dir/encoder.json and dir/vocab.bpe.
  explicit Gpt2Tokenizer(const std::string& dir);

  void encode_append(std::string_view text, std::vector<int32_t>& ids) const override;
  std::string decode(const int32_t* ids, size_t count) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t eot_id() const override { return eot_id_; }
  const std::string& name() const override { return name_; }

 private:
  struct Merge {
    uint64_t key = kEmpty;  // (left id << 32) | right id
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static constexpr uint64_t kEmpty = ~0ULL;

  void read_encoder(const std::string& path);
  void read_merges(const std::string& path);
  const Merge* find_merge(int32_t left, int32_t right) const;
  void encode_piece(const unsigned char* bytes, size_t n, std::vector<int32_t>& ids) const;

  std::string name_ = "gpt2";
  std::vector<std::string> token_bytes_;     // id -> the bytes it stands for
  std::vector<std::string> token_keys_;      // id -> its encoder.json key (for load only)
  std::array<int32_t, 256> byte_id_{};       // byte -> id of its one-byte token
  int32_t eot_id_ = -1;
  std::vector<Merge> merges_;                // open-addressing table, power-of-two size
  uint64_t merge_mask_ = 0;
};

}  // namespace hydra::data
