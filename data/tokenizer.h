// Tokenizers: text <-> token ids.
//   gpt2  GPT-2's byte-level BPE (50257 ids, end-of-text 50256), read from the standard
//         encoder.json and vocab.bpe (scripts/fetch-tokenizer.sh fetches them).
//   bytes one id per byte (256 ids); end-of-text is id 0, the NUL byte, which
//         prepare_corpus() never lets into a document.
// encode() never produces the end-of-text id from text: "<|endoftext|>" in a document is
// ordinary text. Callers put eot_id() between documents. Both are thread-safe (const).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hydra::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ill-formed UTF-8 is first replaced by U+FFFD (WHATWG rules, as the JavaScript
  // reference encoder sees such bytes); valid text round-trips: decode(encode(x)) == x.
  std::vector<int32_t> encode(std::string_view text) const {
    std::vector<int32_t> ids;
    encode_append(text, ids);
    return ids;
  }
  virtual void encode_append(std::string_view text, std::vector<int32_t>& ids) const = 0;

  // The bytes the ids stand for (not necessarily valid UTF-8 for an arbitrary id sequence).
  // An id outside [0, vocab_size()) is an InputError.
  virtual std::string decode(const int32_t* ids, size_t count) const = 0;
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }

  virtual int32_t vocab_size() const = 0;
  virtual int32_t eot_id() const = 0;
  virtual const std::string& name() const = 0;
};

// The directory scripts/fetch-tokenizer.sh fills by default: $HYDRA_TOKENIZER_DIR when set,
// otherwise data-cache/tokenizer/ in the source tree.
std::string default_tokenizer_dir();

// name: "gpt2" (reads dir/encoder.json and dir/vocab.bpe) or "bytes" (dir unused).
// Unknown name: ConfigError. Missing or malformed files: InputError naming the file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name,
                                          const std::string& dir = default_tokenizer_dir());

}  // namespace hydra::data
