// The input side of corpus preparation: which files a list of paths names, how each file
// is cut into pieces that threads can tokenize independently, and what a piece turns into.
//
// A .txt file (or any file named directly that is not .jsonl) is one document. A .jsonl
// file holds one document per line: an object whose "text" member is a string; blank lines
// and empty texts are skipped. Every document is followed by the end-of-text token.
// Directories are searched recursively for *.txt and *.jsonl, in sorted path order.
// Input must be readable, non-empty, UTF-8 without NUL bytes (a leading BOM is dropped);
// otherwise the piece reports an InputError message naming the file (and line).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace hydra::data {

struct InputFile {
  enum class Kind { kText, kJsonl };
  std::string path;
  Kind kind = Kind::kText;
  uint64_t bytes = 0;
};

// Expands files and directories into the ordered list of input files. A path that does
// not exist, or a directory without .txt/.jsonl files, is an InputError.
std::vector<InputFile> list_input_files(const std::vector<std::string>& paths);

// A read-only memory map of a whole input file (nothing mapped for an empty file).
class MappedInput {
 public:
  explicit MappedInput(const InputFile& file);  // InputError if unreadable
  ~MappedInput();
  MappedInput(const MappedInput&) = delete;
  MappedInput& operator=(const MappedInput&) = delete;
  const InputFile& file() const { return file_; }
  std::string_view text() const { return {data_, size_}; }

 private:
  InputFile file_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// A byte range of one input file that is tokenized as a unit.
struct CorpusPiece {
  std::shared_ptr<const MappedInput> input;
  size_t begin = 0, end = 0;  // byte offsets
  uint64_t first_line = 1;    // line number at begin (1-based)
  bool ends_document = false; // text file: the document's last piece, followed by end-of-text
  bool last_of_file = false;
  std::string error;          // set when the file already failed (e.g. empty)
};

struct PieceResult {
  std::vector<int32_t> tokens;
  uint64_t documents = 0;
  uint64_t bytes = 0;
  std::string error;  // non-empty: the InputError message for this piece
};

// Cuts a file into pieces of about target_bytes: text files only where is_safe_split()
// holds (so that the tokens equal those of the whole document), JSONL files at line ends.
std::vector<CorpusPiece> cut_into_pieces(std::shared_ptr<const MappedInput> input, size_t target_bytes);

// Checks and tokenizes one piece. Thread-safe.
PieceResult tokenize_piece(const CorpusPiece& piece, const Tokenizer& tokenizer);

}  // namespace hydra::data
