// Whole-file checksums of a checkpoint's rank files, recorded in the index so that a file
// that was truncated, replaced or damaged outside any dataset is named as such.
//
// Each rank checksums its own file right after writing it (while it is in the page cache,
// in parallel over the ranks) and leaves `<file>.crc32` beside it in the step_N.tmp
// directory; rank 0 moves those into the index at commit. Loading checks each opened file's
// size against the index (cheap: a truncated or swapped file fails before any read);
// `hydra ckpt inspect` checks the whole-file CRC-32 as well.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace hydra::checkpoint {

struct FileChecksum {
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

// Reads `path` once (CRC-32 of the zlib polynomial, crc32.h, computed in parallel).
FileChecksum checksum_file(const std::string& path);

// Writes `<path>.crc32` (bytes and CRC, one line) for the file just written, fsynced.
void write_checksum_sidecar(const std::string& path);
// Reads it back; InputError naming the sidecar if it is missing or malformed.
FileChecksum read_checksum_sidecar(const std::string& path);

// The index's "file_checksums" attribute: one line per file, "<name> <bytes> <crc32 hex>".
std::string format_file_checksums(const std::map<std::string, FileChecksum>& files);
std::map<std::string, FileChecksum> parse_file_checksums(const std::string& text, const std::string& index_path);

// InputError naming the file when its size differs from the index's (missing files fail
// where they are opened).
void check_file_size(const std::string& path, const FileChecksum& expected);
// check_file_size, then the whole file's CRC-32: InputError naming the file and both CRCs.
void check_file_checksum(const std::string& path, const FileChecksum& expected);

}  // namespace hydra::checkpoint
