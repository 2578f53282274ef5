#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/errors.h"

namespace hydra::data {
namespace {

using common::InputError;
using common::RuntimeFailure;

constexpr char kMagic[8] = {'H', 'Y', 'D', 'R', 'A', 'T', 'O', 'K'};
constexpr size_t kWriteBufferBytes = 1 << 20;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards are little-endian; so is this code");

void put32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get32(const unsigned char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get64(const unsigned char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

void encode_header(const ShardHeader& h, unsigned char* out) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kMagic, 8);
  put32(out + 8, h.version);
  put32(out + 12, h.token_bytes);
  put32(out + 16, h.vocab_size);
  put64(out + 24, h.tokens);
}

// Checks a header against the file size; names the file in every message.
ShardHeader decode_header(const std::string& path, const unsigned char* bytes, uint64_t file_size,
                          int32_t expected_vocab) {
  if (file_size < kShardHeaderBytes) {
    HYDRA_FAIL(InputError, "shard " << path << ": " << file_size << " bytes, shorter than the "
                                    << kShardHeaderBytes << "-byte header (truncated?)");
  }
  if (std::memcmp(bytes, kMagic, 8) != 0) {
    HYDRA_FAIL(InputError, "shard " << path << ": bad magic (expected \"HYDRATOK\"; not a token shard)");
  }
  ShardHeader h;
  h.version = get32(bytes + 8);
  h.token_bytes = get32(bytes + 12);
  h.vocab_size = get32(bytes + 16);
  h.tokens = get64(bytes + 24);
  if (h.version != kShardVersion) {
    HYDRA_FAIL(InputError, "shard " << path << ": format version " << h.version << ", expected "
                                    << kShardVersion);
  }
  if (h.vocab_size == 0 || h.token_bytes != token_bytes_for(h.vocab_size)) {
    HYDRA_FAIL(InputError, "shard " << path << ": vocab_size " << h.vocab_size << " with "
                                    << h.token_bytes << " bytes per token is inconsistent");
  }
  if (expected_vocab > 0 && h.vocab_size != static_cast<uint32_t>(expected_vocab)) {
    HYDRA_FAIL(InputError, "shard " << path << ": vocab_size " << h.vocab_size
                                    << ", but the manifest says " << expected_vocab);
  }
  const uint64_t max_tokens = (file_size - kShardHeaderBytes) / h.token_bytes;
  if (h.tokens > max_tokens || kShardHeaderBytes + h.tokens * h.token_bytes != file_size) {
    HYDRA_FAIL(InputError, "shard " << path << ": header says " << h.tokens << " tokens ("
                                    << kShardHeaderBytes + h.tokens * h.token_bytes
                                    << " bytes) but the file has " << file_size
                                    << " bytes (truncated or corrupt)");
  }
  return h;
}

int open_for_read(const std::string& path, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) HYDRA_FAIL(InputError, "shard " << path << ": cannot open: " << std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    HYDRA_FAIL(InputError, "shard " << path << ": not a regular file");
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

}  // namespace

// ---- ShardWriter ----

ShardWriter::ShardWriter(std::string path, int32_t vocab_size) : path_(std::move(path)) {
  const size_t slash = path_.rfind('/');
  temp_path_ = slash == std::string::npos ? "." + path_ + ".tmp"
                                          : path_.substr(0, slash + 1) + "." + path_.substr(slash + 1) + ".tmp";
  header_.vocab_size = static_cast<uint32_t>(vocab_size);
  header_.token_bytes = token_bytes_for(vocab_size);
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) HYDRA_FAIL(InputError, "cannot create " << temp_path_ << ": " << std::strerror(errno));
  buffer_.reserve(kWriteBufferBytes + 8);
  buffer_.resize(kShardHeaderBytes);  // placeholder, rewritten by close()
}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!renamed_) ::unlink(temp_path_.c_str());
}

void ShardWriter::append(const int32_t* tokens, size_t count) {
  const uint32_t width = header_.token_bytes;
  for (size_t i = 0; i < count; ++i) {
    HYDRA_CHECK(tokens[i] >= 0 && static_cast<uint32_t>(tokens[i]) < header_.vocab_size,
                "token " << tokens[i] << " outside the vocabulary of " << path_);
    const uint32_t v = static_cast<uint32_t>(tokens[i]);
    const size_t at = buffer_.size();
    buffer_.resize(at + width);
    std::memcpy(buffer_.data() + at, &v, width);  // little-endian: the low bytes first
    if (buffer_.size() >= kWriteBufferBytes) flush_buffer();
  }
  header_.tokens += count;
}

void ShardWriter::flush_buffer() {
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) HYDRA_FAIL(RuntimeFailure, "writing " << temp_path_ << ": " << std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
}

void ShardWriter::close() {
  HYDRA_CHECK(fd_ >= 0, "shard " << path_ << " closed twice");
  flush_buffer();
  unsigned char header[kShardHeaderBytes];
  encode_header(header_, header);
  if (::pwrite(fd_, header, kShardHeaderBytes, 0) != static_cast<ssize_t>(kShardHeaderBytes) ||
      ::fsync(fd_) != 0) {
    HYDRA_FAIL(RuntimeFailure, "writing " << temp_path_ << ": " << std::strerror(errno));
  }
  ::close(fd_);
  fd_ = -1;
}

void ShardWriter::rename() {
  HYDRA_CHECK(fd_ < 0, "shard " << path_ << " renamed before close()");
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    HYDRA_FAIL(RuntimeFailure, "renaming " << temp_path_ << " to " << path_ << ": " << std::strerror(errno));
  }
  renamed_ = true;
}

// ---- MappedShard ----

ShardHeader read_shard_header(const std::string& path, int32_t expected_vocab) {
  uint64_t size = 0;
  const int fd = open_for_read(path, &size);
  unsigned char bytes[kShardHeaderBytes] = {};
  const ssize_t n = ::pread(fd, bytes, kShardHeaderBytes, 0);
  ::close(fd);
  if (n < 0) HYDRA_FAIL(InputError, "shard " << path << ": cannot read: " << std::strerror(errno));
  return decode_header(path, bytes, size, expected_vocab);
}

MappedShard::MappedShard(std::string path, int32_t expected_vocab) : path_(std::move(path)) {
  uint64_t size = 0;
  const int fd = open_for_read(path_, &size);
  unsigned char bytes[kShardHeaderBytes] = {};
  if (size >= kShardHeaderBytes && ::pread(fd, bytes, kShardHeaderBytes, 0) != static_cast<ssize_t>(kShardHeaderBytes)) {
    ::close(fd);
    HYDRA_FAIL(InputError, "shard " << path_ << ": cannot read the header: " << std::strerror(errno));
  }
  try {
    header_ = decode_header(path_, bytes, size, expected_vocab);
  } catch (...) {
    ::close(fd);
    throw;
  }
  map_bytes_ = static_cast<size_t>(size);
  void* map = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file
  if (map == MAP_FAILED) {
    HYDRA_FAIL(InputError, "shard " << path_ << ": cannot mmap: " << std::strerror(mmap_errno));
  }
  ::madvise(map, map_bytes_, MADV_RANDOM);  // windows are read in shuffled order
  map_ = map;
}

MappedShard::~MappedShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

MappedShard::MappedShard(MappedShard&& other) noexcept
    : path_(std::move(other.path_)), header_(other.header_), map_(other.map_), map_bytes_(other.map_bytes_) {
  other.map_ = nullptr;
  other.map_bytes_ = 0;
}

void MappedShard::copy_to(uint64_t begin, uint64_t count, int64_t* out) const {
  HYDRA_CHECK(begin + count <= header_.tokens, "reading past the end of " << path_);
  const unsigned char* base = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;
  uint32_t largest = 0;
  if (header_.token_bytes == 2) {
    const unsigned char* p = base + begin * 2;
    for (uint64_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      out[i] = v;
      largest = v > largest ? v : largest;
    }
  } else {
    const unsigned char* p = base + begin * 4;
    for (uint64_t i = 0; i < count; ++i) {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = v;
      largest = v > largest ? v : largest;
    }
  }
  if (count > 0 && largest >= header_.vocab_size) {
    for (uint64_t i = 0; i < count; ++i) {
      if (static_cast<uint64_t>(out[i]) >= header_.vocab_size) {
        HYDRA_FAIL(InputError, "shard " << path_ << ": token " << begin + i << " is " << out[i]
                                        << ", outside the vocabulary of " << header_.vocab_size
                                        << " (corrupt file)");
      }
    }
  }
}

}  // namespace hydra::data
