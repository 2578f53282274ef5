// Token shards: the files `hydra data prepare` writes and the loader maps.
//
// Layout (little-endian), 64-byte header then the tokens:
//   0  char[8]  magic "HYDRATOK"
//   8  uint32   format version (1)
//   12 uint32   bytes per token: 2 when vocab_size <= 65536, else 4
//   16 uint32   vocab_size: every token is < vocab_size
//   20 uint32   reserved, 0
//   24 uint64   token count
//   32 ...      zero up to byte 64
//   64 tokens   count x (2 or 4) bytes, unsigned
// A shard is valid only if its size is exactly 64 + count x bytes per token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hydra::data {

constexpr size_t kShardHeaderBytes = 64;
constexpr uint32_t kShardVersion = 1;

inline uint32_t token_bytes_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint32_t vocab_size = 0;
  uint64_t tokens = 0;
};

// Writes one shard to a temporary file next to `path`; commit() patches the header and
// renames it to `path`. A writer destroyed without commit() removes its temporary.
class ShardWriter {
 public:
  ShardWriter(std::string path, int32_t vocab_size);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Tokens must be in [0, vocab_size).
  void append(const int32_t* tokens, size_t count);
  uint64_t tokens() const { return header_.tokens; }
  // Flushes and closes the temporary (its header complete); rename() moves it into place.
  void close();
  void rename();
  const std::string& path() const { return path_; }

 private:
  void flush_buffer();

  std::string path_;
  std::string temp_path_;
  ShardHeader header_;
  int fd_ = -1;
  bool renamed_ = false;
  std::vector<unsigned char> buffer_;
};

// A read-only memory map of one shard, validated on open: magic, version, bytes per token
// consistent with the vocabulary, vocab_size equal to `expected_vocab` (when > 0), and the
// file size equal to what the header says. Every failure is an InputError naming the file.
class MappedShard {
 public:
  MappedShard(std::string path, int32_t expected_vocab);
  ~MappedShard();
  MappedShard(MappedShard&& other) noexcept;
  MappedShard& operator=(MappedShard&&) = delete;
  MappedShard(const MappedShard&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  uint64_t size() const { return header_.tokens; }
  // Copies tokens [begin, begin + count) to out as int64; a token >= vocab_size (a corrupt
  // file) is an InputError naming the file and the token's index.
  void copy_to(uint64_t begin, uint64_t count, int64_t* out) const;

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
};

// Reads and checks just the header (as MappedShard does), without mapping the tokens.
ShardHeader read_shard_header(const std::string& path, int32_t expected_vocab);

}  // namespace hydra::data
