#include "data/corpus_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/errors.h"
#include "data/json_reader.h"
#include "data/pretokenize.h"
#include "data/utf8.h"

namespace hydra::data {
namespace {

namespace fs = std::filesystem;
using common::InputError;

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

InputFile describe(const fs::path& path) {
  InputFile f;
  f.path = path.string();
  f.kind = has_suffix(f.path, ".jsonl") ? InputFile::Kind::kJsonl : InputFile::Kind::kText;
  std::error_code ec;
  f.bytes = fs::file_size(path, ec);
  if (ec) HYDRA_FAIL(InputError, "input " << f.path << ": cannot read: " << ec.message());
  return f;
}

uint64_t line_of(std::string_view text, size_t offset) {
  return 1 + static_cast<uint64_t>(std::count(text.begin(), text.begin() + offset, '\n'));
}

// The message for the first ill-formed UTF-8 sequence or NUL byte in text[begin, end), or "".
std::string check_text(const MappedInput& input, size_t begin, size_t end) {
  const std::string_view all = input.text();
  const std::string_view range = all.substr(begin, end - begin);
  const size_t bad = find_invalid_utf8(range);
  const void* nul = std::memchr(range.data(), 0, range.size());
  const size_t nul_at = nul ? static_cast<const char*>(nul) - range.data() : std::string_view::npos;
  if (bad == std::string_view::npos && nul_at == std::string_view::npos) return "";
  const size_t at = begin + std::min(bad, nul_at);
  std::ostringstream msg;
  msg << "input " << input.file().path << ":" << line_of(all, at) << ": ";
  if (bad < nul_at) {
    msg << "not valid UTF-8 (byte " << at << " is 0x" << std::hex
        << static_cast<int>(static_cast<unsigned char>(all[at])) << std::dec << ")";
  } else {
    msg << "NUL byte at byte " << at << " (a binary file? text must not contain NUL)";
  }
  return msg.str();
}

void tokenize_jsonl(const CorpusPiece& piece, const Tokenizer& tokenizer, PieceResult& result) {
  const std::string_view all = piece.input->text();
  const std::string& path = piece.input->file().path;
  uint64_t line_no = piece.first_line;
  for (size_t pos = piece.begin; pos < piece.end; ++line_no) {
    const size_t nl = all.find('\n', pos);
    const size_t line_end = nl == std::string_view::npos || nl > piece.end ? piece.end : nl;
    const std::string_view line = all.substr(pos, line_end - pos);
    const size_t line_begin = pos;
    pos = line_end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
    if (std::string err = check_text(*piece.input, line_begin, line_end); !err.empty()) {
      result.error = std::move(err);
      return;
    }
    const JsonParseResult parsed = parse_json(line);
    std::ostringstream where;
    where << "input " << path << ":" << line_no << ": ";
    if (!parsed.ok) {
      result.error = where.str() + "not valid JSON at column " + std::to_string(parsed.error_offset + 1) +
                     ": " + parsed.error;
      return;
    }
    if (!parsed.value.is_object()) {
      result.error = where.str() + "expected a JSON object with a \"text\" string";
      return;
    }
    const JsonValue* text = parsed.value.find("text");
    if (!text) {
      result.error = where.str() + "no \"text\" field (each line must be an object with a \"text\" string)";
      return;
    }
    if (!text->is_string()) {
      result.error = where.str() + "\"text\" is " + JsonValue::kind_name(text->kind()) + ", expected a string";
      return;
    }
    const std::string& doc = text->as_string();
    if (doc.find('\0') != std::string::npos) {
      result.error = where.str() + "\"text\" contains U+0000 (NUL), which documents may not contain";
      return;
    }
    if (doc.empty()) continue;
    tokenizer.encode_append(doc, result.tokens);
    result.tokens.push_back(tokenizer.eot_id());
    ++result.documents;
  }
}

}  // namespace

std::vector<InputFile> list_input_files(const std::vector<std::string>& paths) {
  std::vector<InputFile> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    if (ec || !fs::exists(st)) HYDRA_FAIL(InputError, "input " << p << ": no such file or directory");
    if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::follow_directory_symlink, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().string();
        if (it->is_regular_file() && (has_suffix(name, ".txt") || has_suffix(name, ".jsonl"))) {
          found.push_back(it->path());
        }
      }
      if (ec) HYDRA_FAIL(InputError, "input " << p << ": cannot list: " << ec.message());
      if (found.empty()) HYDRA_FAIL(InputError, "input " << p << ": no .txt or .jsonl files in this directory");
      std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
      for (const auto& f : found) files.push_back(describe(f));
    } else {
      files.push_back(describe(p));
    }
  }
  return files;
}

MappedInput::MappedInput(const InputFile& file) : file_(file) {
  const int fd = ::open(file_.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) HYDRA_FAIL(InputError, "input " << file_.path << ": cannot open: " << std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    HYDRA_FAIL(InputError, "input " << file_.path << ": cannot stat: " << std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (map == MAP_FAILED) HYDRA_FAIL(InputError, "input " << file_.path << ": cannot read: " << std::strerror(err));
    ::madvise(map, size_, MADV_SEQUENTIAL);
    data_ = static_cast<const char*>(map);
  } else {
    ::close(fd);
  }
}

MappedInput::~MappedInput() {
  if (data_) ::munmap(const_cast<char*>(data_), size_);
}

std::vector<CorpusPiece> cut_into_pieces(std::shared_ptr<const MappedInput> input, size_t target_bytes) {
  const std::string_view text = input->text();
  const bool jsonl = input->file().kind == InputFile::Kind::kJsonl;
  std::vector<CorpusPiece> pieces;
  size_t begin = (!jsonl && text.substr(0, 3) == "\xEF\xBB\xBF") ? 3 : 0;  // drop a BOM
  if (begin == text.size()) {
    CorpusPiece empty;
    empty.input = input;
    empty.last_of_file = true;
    empty.error = "input " + input->file().path + ": empty file";
    pieces.push_back(std::move(empty));
    return pieces;
  }
  uint64_t line = 1;
  while (begin < text.size()) {
    size_t end = text.size();
    for (size_t probe = begin + target_bytes; probe < text.size();) {
      const size_t nl = text.find('\n', probe);
      if (nl == std::string_view::npos || nl + 1 >= text.size()) break;
      if (jsonl || is_safe_split(text, nl + 1)) {
        end = nl + 1;
        break;
      }
      probe = nl + 1;
    }
    CorpusPiece piece;
    piece.input = input;
    piece.begin = begin;
    piece.end = end;
    piece.first_line = line;
    piece.ends_document = !jsonl && end == text.size();
    piece.last_of_file = end == text.size();
    if (jsonl && !piece.last_of_file) line += std::count(text.begin() + begin, text.begin() + end, '\n');
    pieces.push_back(std::move(piece));
    begin = end;
  }
  return pieces;
}

PieceResult tokenize_piece(const CorpusPiece& piece, const Tokenizer& tokenizer) {
  PieceResult result;
  result.bytes = piece.end - piece.begin;
  if (!piece.error.empty()) {
    result.error = piece.error;
    return result;
  }
  if (piece.input->file().kind == InputFile::Kind::kJsonl) {
    tokenize_jsonl(piece, tokenizer, result);
    return result;
  }
  if (std::string err = check_text(*piece.input, piece.begin, piece.end); !err.empty()) {
    result.error = std::move(err);
    return result;
  }
  tokenizer.encode_append(piece.input->text().substr(piece.begin, piece.end - piece.begin), result.tokens);
  if (piece.ends_document) {
    result.tokens.push_back(tokenizer.eot_id());
    result.documents = 1;
  }
  return result;
}

}  // namespace hydra::data
