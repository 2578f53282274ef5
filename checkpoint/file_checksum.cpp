#include "checkpoint/file_checksum.h"

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "checkpoint/crc32.h"
#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace hydra::checkpoint {

using common::InputError;

FileChecksum checksum_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYDRA_FAIL(InputError, path << ": cannot open to checksum");
  // Large reads (the file is usually still in the page cache, so a read is a memcpy) and a
  // parallel CRC of each, continued across them: the CRC no longer limits the rate.
  std::vector<char> buffer(size_t{64} << 20);
  FileChecksum out;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<size_t>(in.gcount());
    out.crc32 = crc32_parallel(buffer.data(), got, out.crc32);
    out.bytes += static_cast<int64_t>(got);
  }
  if (in.bad()) HYDRA_FAIL(InputError, path << ": read error while checksumming");
  return out;
}

void write_checksum_sidecar(const std::string& path) {
  const FileChecksum sum = checksum_file(path);
  const std::string sidecar = path + ".crc32";
  {
    std::ofstream out(sidecar, std::ios::trunc);
    char line[64];
    std::snprintf(line, sizeof(line), "%" PRId64 " %08" PRIx32 "\n", sum.bytes, sum.crc32);
    out << line;
    out.close();  // the write happens here, and may fail (a full disk)
    if (!out) HYDRA_FAIL(common::RuntimeFailure, sidecar << ": cannot write");
  }
  fsync_path(sidecar);
}

FileChecksum read_checksum_sidecar(const std::string& path) {
  const std::string sidecar = path + ".crc32";
  std::ifstream in(sidecar);
  FileChecksum sum;
  std::string hex;
  if (!(in >> sum.bytes >> hex) || hex.size() != 8) {
    HYDRA_FAIL(InputError, sidecar << ": missing or malformed (the rank that wrote " << path << " did not finish)");
  }
  sum.crc32 = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
  return sum;
}

std::string format_file_checksums(const std::map<std::string, FileChecksum>& files) {
  std::string out;
  for (const auto& [name, sum] : files) {
    char line[256];
    std::snprintf(line, sizeof(line), "%s %" PRId64 " %08" PRIx32 "\n", name.c_str(), sum.bytes, sum.crc32);
    out += line;
  }
  return out;
}

std::map<std::string, FileChecksum> parse_file_checksums(const std::string& text, const std::string& index_path) {
  std::map<std::string, FileChecksum> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string name, hex;
    FileChecksum sum;
    if (!(fields >> name >> sum.bytes >> hex) || hex.size() != 8) {
      HYDRA_FAIL(InputError, index_path << ": file_checksums: malformed line '" << line << "'");
    }
    sum.crc32 = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    out[name] = sum;
  }
  return out;
}

void check_file_size(const std::string& path, const FileChecksum& expected) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) HYDRA_FAIL(InputError, path << ": missing (" << ec.message() << ")");
  if (static_cast<int64_t>(bytes) != expected.bytes) {
    HYDRA_FAIL(InputError, path << ": " << bytes << " bytes, the index records " << expected.bytes
                                << " (truncated, or not the file this checkpoint wrote)");
  }
}

void check_file_checksum(const std::string& path, const FileChecksum& expected) {
  check_file_size(path, expected);
  const FileChecksum actual = checksum_file(path);
  if (actual.crc32 != expected.crc32) {
    char crcs[64];
    std::snprintf(crcs, sizeof(crcs), "%08" PRIx32 ", the index records %08" PRIx32, actual.crc32, expected.crc32);
    HYDRA_FAIL(InputError, path << ": whole-file CRC-32 " << crcs << ": the file is damaged");
  }
}

}  // namespace hydra::checkpoint
