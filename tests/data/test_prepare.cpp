// Token shards and corpus preparation: the shard header round trip and its validation,
// prepare_corpus() output (documents, end-of-text, train/val split, sharding, manifest),
// independence from the thread count, and the errors for bad input, each naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "data/manifest.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "data_test_util.h"

namespace hydra::data {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::write_file;

// The message of the InputError that fn throws ("" and a test failure if none).
template <typename Fn>
std::string input_error(Fn fn) {
  try {
    fn();
  } catch (const common::InputError& e) {
    EXPECT_EQ(e.code(), common::ExitCode::kBadInput);
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected InputError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected InputError, nothing was thrown";
  return "";
}

#define EXPECT_MENTIONS(message, part) \
  EXPECT_NE((message).find(part), std::string::npos) << "message: " << (message) << "\nexpected to mention: " << (part)

std::vector<int64_t> read_shard(const std::string& path, int32_t vocab) {
  MappedShard shard(path, vocab);
  std::vector<int64_t> tokens(shard.size());
  shard.copy_to(0, shard.size(), tokens.data());
  return tokens;
}

// All tokens of a split, in manifest order.
std::vector<int64_t> read_split(const std::string& dir, const std::vector<ShardEntry>& shards, int32_t vocab) {
  std::vector<int64_t> all;
  for (const auto& s : shards) {
    const auto t = read_shard(dir + "/" + s.file, vocab);
    EXPECT_EQ(t.size(), s.tokens) << s.file;
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

PrepareOptions bytes_options(const std::vector<std::string>& inputs, const std::string& out) {
  PrepareOptions o;
  o.inputs = inputs;
  o.output_dir = out;
  o.tokenizer = "bytes";
  o.val_fraction = 0;
  o.progress = false;
  return o;
}

// ---- shards ----

TEST(DataShard, HeaderAndTokensRoundTrip) {
  ScratchDir dir;
  for (int32_t vocab : {256, 50257, 65536, 100000}) {
    const std::string path = dir / ("s" + std::to_string(vocab) + ".bin");
    std::vector<int32_t> tokens;
    for (int i = 0; i < 5000; ++i) tokens.push_back((i * 7919) % vocab);
    tokens.push_back(vocab - 1);
    {
      ShardWriter w(path, vocab);
      w.append(tokens.data(), 1234);
      w.append(tokens.data() + 1234, tokens.size() - 1234);
      w.close();
      EXPECT_FALSE(fs::exists(path)) << "visible before rename()";
      w.rename();
    }
    const ShardHeader h = read_shard_header(path, vocab);
    EXPECT_EQ(h.version, kShardVersion);
    EXPECT_EQ(h.vocab_size, static_cast<uint32_t>(vocab));
    EXPECT_EQ(h.token_bytes, vocab <= 65536 ? 2u : 4u);
    EXPECT_EQ(h.tokens, tokens.size());
    EXPECT_EQ(fs::file_size(path), kShardHeaderBytes + tokens.size() * h.token_bytes);
    const auto back = read_shard(path, vocab);
    EXPECT_EQ(std::vector<int64_t>(tokens.begin(), tokens.end()), back);
  }
  // A writer destroyed before rename() leaves nothing behind.
  { ShardWriter w(dir / "abandoned.bin", 256); }
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find("abandoned"), std::string::npos) << e.path();
  }
}

TEST(DataShard, CorruptOrTruncatedFilesAreInputErrorsNamingTheFile) {
  ScratchDir dir;
  const std::string good = dir / "good.bin";
  {
    std::vector<int32_t> tokens(100, 7);
    ShardWriter w(good, 50257);
    w.append(tokens.data(), tokens.size());
    w.close();
    w.rename();
  }
  const std::string bytes = testing::read_file(good);
  const auto variant = [&](const std::string& name, std::string content) {
    const std::string path = dir / name;
    write_file(path, content);
    return path;
  };
  std::string magic = bytes;
  magic[0] = 'X';
  std::string version = bytes;
  version[8] = 9;
  std::string count = bytes;
  count[24] = 101;  // 101 tokens claimed, 100 present
  std::string width = bytes;
  width[12] = 4;  // 4 bytes per token with a 50257 vocabulary
  const std::vector<std::pair<std::string, std::string>> cases = {
      {variant("magic.bin", magic), "bad magic"},
      {variant("version.bin", version), "format version 9"},
      {variant("count.bin", count), "101 tokens"},
      {variant("width.bin", width), "inconsistent"},
      {variant("truncated.bin", bytes.substr(0, bytes.size() - 1)), "truncated"},
      {variant("short.bin", bytes.substr(0, 10)), "shorter than the 64-byte header"},
      {variant("empty.bin", ""), "shorter than the 64-byte header"},
      {dir / "missing.bin", "cannot open"},
  };
  for (const auto& [path, what] : cases) {
    const std::string msg = input_error([&] { MappedShard s(path, 50257); });
    EXPECT_MENTIONS(msg, path);
    EXPECT_MENTIONS(msg, what);
  }
  // The vocabulary must be the manifest's.
  const std::string msg = input_error([&] { MappedShard s(good, 256); });
  EXPECT_MENTIONS(msg, good);
  EXPECT_MENTIONS(msg, "vocab_size 50257");
  // A token outside the vocabulary is found when it is read.
  std::string bad_token = bytes;
  bad_token[kShardHeaderBytes + 2 * 10] = static_cast<char>(0xFF);
  bad_token[kShardHeaderBytes + 2 * 10 + 1] = static_cast<char>(0xFF);
  const std::string path = variant("bad_token.bin", bad_token);
  MappedShard shard(path, 50257);
  std::vector<int64_t> out(100);
  const std::string token_msg = input_error([&] { shard.copy_to(0, 100, out.data()); });
  EXPECT_MENTIONS(token_msg, path);
  EXPECT_MENTIONS(token_msg, "token 10 is 65535");
}

// ---- prepare_corpus ----

TEST(DataPrepare, DocumentsInSortedOrderEachFollowedByEndOfText) {
  ScratchDir in, out;
  write_file(in / "b/2.txt", "second");
  write_file(in / "a.txt", "\xEF\xBB\xBF" "first");  // the BOM is dropped
  write_file(in / "b/1.jsonl", "{\"text\": \"j1\", \"id\": 1}\n\n{\"text\": \"\"}\n{\"meta\": {}, \"text\": \"j\\u00e92\"}\n");
  write_file(in / "b/ignored.md", "not listed: neither .txt nor .jsonl");
  write_file(out / "explicit.dat", "named directly");
  const PrepareSummary s = prepare_corpus(bytes_options({in.path(), out / "explicit.dat"}, out / "tokens"));
  EXPECT_EQ(s.input_files, 4u);
  EXPECT_EQ(s.documents, 5u);
  const Manifest m = read_manifest(out / "tokens");
  EXPECT_EQ(m.tokenizer, "bytes");
  EXPECT_EQ(m.vocab_size, 256);
  EXPECT_EQ(m.eot_id, 0);
  EXPECT_EQ(m.token_bytes, 2u);
  EXPECT_EQ(m.documents, 5u);
  EXPECT_TRUE(m.val.empty());
  std::string expected = std::string("first") + '\0' + "j1" + '\0' + "j\xC3\xA9" "2" + '\0' + "second" + '\0' +
                         "named directly" + '\0';
  const auto tokens = read_split(out / "tokens", m.train, 256);
  EXPECT_EQ(std::string(tokens.begin(), tokens.end()), expected);
}

TEST(DataPrepare, ValidationSplitShardsAndManifest) {
  ScratchDir in, out;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "line " + std::to_string(i) + " of a long document\n";  // ~540 KB
  write_file(in / "doc.txt", text);
  PrepareOptions o = bytes_options({in.path()}, out.path());
  o.val_fraction = 0.1;
  o.val_chunk_tokens = 1000;
  o.shard_tokens = 100000;
  const PrepareSummary s = prepare_corpus(o);
  const Manifest m = read_manifest(out.path());
  EXPECT_EQ(s.train_tokens + s.val_tokens, text.size() + 1);
  EXPECT_GT(s.val_tokens, 0.05 * text.size());  // about 10%, in whole chunks
  EXPECT_LT(s.val_tokens, 0.15 * text.size());
  EXPECT_EQ(s.val_tokens % 1000, 0u);
  EXPECT_GT(m.train.size(), 4u);
  for (size_t i = 0; i + 1 < m.train.size(); ++i) EXPECT_EQ(m.train[i].tokens, 100000u);
  EXPECT_EQ(m.train[0].file, "train_000000.bin");
  EXPECT_EQ(m.val[0].file, "val_000000.bin");
  // Train and val interleave to the original stream chunk by chunk.
  const auto train = read_split(out.path(), m.train, 256);
  const auto val = read_split(out.path(), m.val, 256);
  std::string stream = text + '\0';
  size_t t = 0, v = 0, val_chunks = 0;
  for (size_t chunk = 0; chunk * 1000 < stream.size(); ++chunk) {
    const size_t len = std::min<size_t>(1000, stream.size() - chunk * 1000);
    const std::string want = stream.substr(chunk * 1000, len);
    if (t + len <= train.size() && std::string(train.begin() + t, train.begin() + t + len) == want) {
      t += len;
    } else {
      ASSERT_LE(v + len, val.size()) << "chunk " << chunk << " is in neither split";
      ASSERT_EQ(std::string(val.begin() + v, val.begin() + v + len), want) << "chunk " << chunk;
      v += len, ++val_chunks;
    }
  }
  EXPECT_EQ(t, train.size());
  EXPECT_EQ(v, val.size());
  EXPECT_GT(val_chunks, 20u);

  // A second run with a bigger shard size replaces the output and removes the old shards.
  o.shard_tokens = 1 << 20;
  prepare_corpus(o);
  const Manifest m2 = read_manifest(out.path());
  EXPECT_EQ(m2.train.size(), 1u);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(out.path())) ++files, (void)e;
  EXPECT_EQ(files, 3u) << "manifest.json, train_000000.bin, val_000000.bin";
}

TEST(DataPrepare, SmallCorpusStillGetsValidationTokens) {
  ScratchDir in, out;
  write_file(in / "tiny.txt", std::string(300, 'x'));
  PrepareOptions o = bytes_options({in.path()}, out.path());
  o.val_fraction = 0.005;
  const PrepareSummary s = prepare_corpus(o);
  EXPECT_EQ(s.val_tokens, 2u);  // ceil(0.005 * 301): the end of the stream
  EXPECT_EQ(s.train_tokens, 299u);
}

TEST(DataPrepare, OutputDoesNotDependOnThreadsOrPieceSize) {
  const testing::Gpt2Files& files = testing::gpt2_files();
  if (files.unreachable) GTEST_SKIP() << files.message;
  ASSERT_TRUE(files.ok) << files.message;
  ScratchDir in, out;
  const auto sample = testing::real_text_sample(300 * 1024);
  ASSERT_FALSE(sample.empty());
  std::vector<std::string> docs;
  std::string jsonl;
  for (size_t i = 0; i < sample.size(); ++i) {
    const std::string name = "doc" + std::to_string(1000 + i) + ".txt";
    write_file(in / name, sample[i].second);
    docs.push_back(sample[i].second);
  }
  write_file(in / "zz.jsonl", "{\"text\": \"Last one.\\nBye.\"}\n{\"text\": \"\\ud83d\\ude00 \\\"q\\\"\"}\n");
  docs.push_back("Last one.\nBye.");
  docs.push_back("\xF0\x9F\x98\x80 \"q\"");

  const auto tok = load_tokenizer("gpt2", files.dir);
  std::vector<int64_t> expected;
  for (const auto& d : docs) {
    for (int32_t id : tok->encode(d)) expected.push_back(id);
    expected.push_back(tok->eot_id());
  }
  for (const auto& [threads, piece] : std::vector<std::pair<int, size_t>>{{1, 1 << 20}, {3, 4096}, {2, 100}}) {
    PrepareOptions o;
    o.inputs = {in.path()};
    o.output_dir = out / ("t" + std::to_string(threads));
    o.tokenizer_dir = files.dir;
    o.val_fraction = 0;
    o.threads = threads;
    o.piece_bytes = piece;
    o.progress = false;
    prepare_corpus(o);
    const Manifest m = read_manifest(o.output_dir);
    EXPECT_EQ(m.tokenizer, "gpt2");
    EXPECT_EQ(m.vocab_size, 50257);
    EXPECT_EQ(m.documents, docs.size());
    EXPECT_EQ(read_split(o.output_dir, m.train, 50257), expected) << threads << " threads, pieces of " << piece;
  }
}

TEST(DataPrepare, BadInputIsAnInputErrorNamingTheFileAndLine) {
  ScratchDir in, out;
  struct Case {
    std::string name, content, mention;
  };
  const std::vector<Case> cases = {
      {"empty.txt", "", "empty file"},
      {"bom_only.txt", "\xEF\xBB\xBF", "empty file"},
      {"latin1.txt", "line one\ncaf\xE9\n", ":2: not valid UTF-8 (byte 12 is 0xe9)"},
      {"binary.txt", std::string("ab\0cd", 5), ":1: NUL byte at byte 2"},
      {"no_text.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n", ":2: no \"text\" field"},
      {"not_string.jsonl", "{\"text\": 42}\n", ":1: \"text\" is a number, expected a string"},
      {"bad_json.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\",}\n", ":3: not valid JSON at column 14: expected a member name"},
      {"not_object.jsonl", "[1, 2]\n", ":1: expected a JSON object"},
      {"bad_utf8.jsonl", "{\"text\": \"\xC3\"}\n", ":1: not valid UTF-8"},
      {"lone_surrogate.jsonl", "{\"text\": \"\\ud800\"}\n", ":1: not valid JSON"},
      {"nul.jsonl", "{\"text\": \"a\\u0000b\"}\n", ":1: \"text\" contains U+0000"},
      {"blank.jsonl", "\n  \n{\"text\": \"\"}\n", "no documents"},
      {"empty.jsonl", "", "empty file"},
  };
  for (const Case& c : cases) {
    const std::string path = in / c.name;
    write_file(path, c.content);
    write_file(in / "fine.txt", "good text");
    const std::string msg = input_error([&] { prepare_corpus(bytes_options({in / "fine.txt", path}, out.path())); });
    EXPECT_MENTIONS(msg, path);
    EXPECT_MENTIONS(msg, c.mention);
  }
  EXPECT_FALSE(fs::exists(out / kManifestName)) << "a failed run must not write a manifest";
  for (const auto& e : fs::directory_iterator(out.path())) ADD_FAILURE() << "left behind: " << e.path();

  // The first bad file in input order is the one reported, whatever the threads do.
  write_file(in / "d/1.txt", std::string(200000, 'a'));
  write_file(in / "d/2.txt", "");
  write_file(in / "d/3.txt", "\xFF");
  PrepareOptions o = bytes_options({in / "d"}, out.path());
  o.threads = 3;
  o.piece_bytes = 1000;
  EXPECT_MENTIONS(input_error([&] { prepare_corpus(o); }), in / "d/2.txt");

  const std::string missing = input_error([&] { prepare_corpus(bytes_options({in / "nope"}, out.path())); });
  EXPECT_MENTIONS(missing, in / "nope");
  fs::create_directories(in / "nothing");
  const std::string no_files = input_error([&] { prepare_corpus(bytes_options({in / "nothing"}, out.path())); });
  EXPECT_MENTIONS(no_files, "no .txt or .jsonl files");
}

TEST(DataPrepare, BadOptionsAreConfigErrors) {
  ScratchDir in, out;
  write_file(in / "a.txt", "text");
  PrepareOptions o = bytes_options({in / "a.txt"}, out.path());
  o.val_fraction = 1.0;
  EXPECT_THROW(prepare_corpus(o), common::ConfigError);
  o.val_fraction = -0.1;
  EXPECT_THROW(prepare_corpus(o), common::ConfigError);
  o.val_fraction = 0;
  o.tokenizer = "gpt4";
  EXPECT_THROW(prepare_corpus(o), common::ConfigError);
  o.tokenizer = "bytes";
  o.inputs.clear();
  EXPECT_THROW(prepare_corpus(o), common::ConfigError);
}

TEST(DataManifest, MissingOrMalformedIsAnInputErrorNamingTheFile) {
  ScratchDir dir;
  EXPECT_MENTIONS(input_error([&] { read_manifest(dir.path()); }), dir / kManifestName);
  write_file(dir / kManifestName, "{\"format\": \"hydra-token-shards\", \"version\": 1}");
  const std::string msg = input_error([&] { read_manifest(dir.path()); });
  EXPECT_MENTIONS(msg, dir / kManifestName);
  EXPECT_MENTIONS(msg, "missing key \"tokenizer\"");
  write_file(dir / kManifestName, "{not json");
  EXPECT_MENTIONS(input_error([&] { read_manifest(dir.path()); }), "not valid JSON");
}

}  // namespace
}  // namespace hydra::data
