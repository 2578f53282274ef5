#include "data/tokenizer.h"

#include <cstdlib>

#include "common/errors.h"
#include "data/gpt2_bpe.h"
#include "data/utf8.h"

namespace hydra::data {
namespace {

// One id per byte. Ill-formed UTF-8 is repaired like gpt2 does, so that both tokenizers see
// the same text; id 0 (NUL) doubles as end-of-text.
class BytesTokenizer : public Tokenizer {
 public:
  void encode_append(std::string_view text, std::vector<int32_t>& ids) const override {
    std::string repaired;
    if (find_invalid_utf8(text) != std::string_view::npos) {
      repaired = replace_invalid_utf8(text);
      text = repaired;
    }
    ids.reserve(ids.size() + text.size());
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  }

  std::string decode(const int32_t* ids, size_t count) const override {
    std::string out(count, '\0');
    for (size_t i = 0; i < count; ++i) {
      if (ids[i] < 0 || ids[i] > 255) {
        HYDRA_FAIL(common::InputError, "bytes tokenizer: token id " << ids[i] << " at position " << i
                                                                    << " is outside [0, 256)");
      }
      out[i] = static_cast<char>(ids[i]);
    }
    return out;
  }

  int32_t vocab_size() const override { return 256; }
  int32_t eot_id() const override { return 0; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_ = "bytes";
};

}  // namespace

std::string default_tokenizer_dir() {
  if (const char* env = std::getenv("HYDRA_TOKENIZER_DIR"); env && *env) return env;
  return HYDRA_DEFAULT_TOKENIZER_DIR;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name, const std::string& dir) {
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(dir);
  if (name == "bytes") return std::make_unique<BytesTokenizer>();
  HYDRA_FAIL(common::ConfigError, "unknown tokenizer '" << name << "' (data.tokenizer / --tokenizer: expected gpt2 or bytes)");
}

}  // namespace hydra::data
