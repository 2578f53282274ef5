// The fast CRC-32 (checkpoint/crc32.h) against a one-bit-at-a-time reference written here
// from the definition: the standard check value, every length and misalignment a table
// loop has edge cases for, buffers of several MB (the parallel path), crc32_combine, the
// per-block CRCs, and a whole-file checksum equal to Python's zlib.crc32.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "checkpoint/crc32.h"
#include "checkpoint/file_checksum.h"
#include "tests/checkpoint/zlib_crc32.h"

namespace {

using namespace hydra::checkpoint;

// CRC-32/ISO-HDLC by definition: reflected input and output, polynomial 0x04C11DB7
// (0xEDB88320 reflected), initial value and final xor 0xFFFFFFFF; one bit per step.
uint32_t reference_crc(const unsigned char* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<unsigned char> random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<unsigned char> out(n);
  for (auto& b : out) b = static_cast<unsigned char>(gen());
  return out;
}

TEST(Crc32, CheckValue) {
  EXPECT_EQ(crc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32_parallel("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32("", 0), 0u);
}

TEST(Crc32, EqualsTheReferenceForEveryShortLengthAndMisalignment) {
  const std::vector<unsigned char> buffer = random_bytes(200, 1);
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; n <= 72; ++n) {
      const unsigned char* p = buffer.data() + offset;
      const uint32_t want = reference_crc(p, n);
      EXPECT_EQ(crc32(p, n), want) << "offset " << offset << " length " << n;
      EXPECT_EQ(crc32_parallel(p, n), want) << "offset " << offset << " length " << n;
      // Continuing a running value.
      EXPECT_EQ(crc32(p, n, 0x12345678u), reference_crc(p, n, 0x12345678u)) << "offset " << offset << " length " << n;
    }
  }
}

TEST(Crc32, LargeBuffersInParallelEqualTheReference) {
  const std::vector<unsigned char> buffer = random_bytes((size_t{5} << 20) + 123, 2);
  for (size_t offset : {0, 1, 3, 7}) {
    for (size_t n : {size_t{2} << 20, (size_t{3} << 20) + 5, buffer.size() - offset}) {
      const unsigned char* p = buffer.data() + offset;
      const uint32_t want = reference_crc(p, n);
      EXPECT_EQ(crc32(p, n), want) << "offset " << offset << " length " << n;
      EXPECT_EQ(crc32_parallel(p, n), want) << "offset " << offset << " length " << n;
      EXPECT_EQ(crc32_parallel(p, n, 0xDEADBEEFu), reference_crc(p, n, 0xDEADBEEFu)) << "offset " << offset;
    }
  }
}

TEST(Crc32, CombineJoinsTwoRanges) {
  const std::vector<unsigned char> buffer = random_bytes(3000, 3);
  for (size_t total : {0, 1, 17, 1000, 3000}) {
    for (size_t split : {size_t{0}, total / 3, total / 2, total}) {
      const unsigned char* a = buffer.data();
      const unsigned char* b = buffer.data() + split;
      EXPECT_EQ(crc32_combine(crc32(a, split), crc32(b, total - split), total - split), reference_crc(a, total))
          << "total " << total << " split " << split;
    }
  }
  // A long second range: the shift by x^(8 len) must square-and-multiply correctly.
  const std::vector<unsigned char> big = random_bytes((size_t{1} << 20) + 77, 4);
  EXPECT_EQ(crc32_combine(crc32(big.data(), 5), crc32(big.data() + 5, big.size() - 5), big.size() - 5),
            reference_crc(big.data(), big.size()));
}

TEST(Crc32, BlocksAreTheCrcsOfConsecutiveSlices) {
  const std::vector<unsigned char> buffer = random_bytes((size_t{6} << 20) + 11, 5);
  for (size_t block : {size_t{1}, size_t{24}, size_t{1000}, (size_t{3} << 20) - 1, size_t{4} << 20}) {
    const size_t n = block == 1 ? 100 : buffer.size();  // one-byte blocks: a short buffer
    const std::vector<uint32_t> crcs = crc32_blocks(buffer.data(), n, block);
    ASSERT_EQ(crcs.size(), (n + block - 1) / block) << "block " << block;
    for (size_t k = 0; k < crcs.size(); ++k) {
      const size_t len = std::min(block, n - k * block);
      ASSERT_EQ(crcs[k], reference_crc(buffer.data() + k * block, len)) << "block " << block << " #" << k;
    }
  }
  EXPECT_TRUE(crc32_blocks(buffer.data(), 0, 16).empty());
  EXPECT_EQ(crc32_blocks(buffer.data(), 100, 0), std::vector<uint32_t>{reference_crc(buffer.data(), 100)});
}

// checksum_file (the index's file_checksums) over a file larger than its parallel pieces
// equals what Python's zlib computes.
TEST(Crc32, FileChecksumEqualsPythonZlib) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("hydra_crc32_file_" + std::to_string(::getpid()) + ".bin")).string();
  const std::vector<unsigned char> bytes = random_bytes((size_t{7} << 20) + 3, 6);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  const FileChecksum sum = checksum_file(path);
  EXPECT_EQ(sum.bytes, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(sum.crc32, reference_crc(bytes.data(), bytes.size()));
  EXPECT_EQ(sum.crc32, static_cast<uint32_t>(hydra::test::zlib_crc32_of_file(path)));
  std::filesystem::remove(path);
}

}  // namespace
