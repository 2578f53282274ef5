#include "checkpoint/crc32.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

namespace hydra::checkpoint {
namespace {

constexpr uint32_t kPoly = 0xEDB88320u;  // reflected: bit 31 is x^0, bit 0 is x^31

// tables[k][b]: the CRC register after byte b is followed by k zero bytes. Slicing-by-16
// folds 16 input bytes with 16 independent lookups per step instead of 16 dependent ones.
using Tables = std::array<std::array<uint32_t, 256>, 16>;

Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? kPoly ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (size_t k = 1; k < t.size(); ++k) {
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFFu];
  }
  return t;
}

const Tables& tables() {
  static const Tables t = make_tables();
  return t;
}

// Four input bytes as a number whose low byte is the first of them (the order the reflected
// CRC consumes bytes), whatever the machine's byte order.
inline uint32_t load_le32(const unsigned char* p) {
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  w = __builtin_bswap32(w);
#endif
  return w;
}

// a * b modulo the CRC polynomial, both in the reflected representation.
uint32_t multiply(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 0x80000000u; bit != 0; bit >>= 1) {  // x^0, x^1, ... x^31 of a
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;  // b *= x
  }
  return product;
}

// x^(8 * bytes) modulo the polynomial: appending `bytes` zero bytes multiplies the CRC
// register by it. Square-and-multiply over the bits of `bytes`, from x^8.
uint32_t shift_by_bytes(uint64_t bytes) {
  uint32_t result = 0x80000000u;  // x^0
  uint32_t power = 0x00800000u;   // x^8
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1) result = multiply(result, power);
    power = multiply(power, power);
  }
  return result;
}

}  // namespace

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  const Tables& t = tables();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (; bytes >= 16; bytes -= 16, p += 16) {
    const uint32_t w0 = load_le32(p) ^ crc, w1 = load_le32(p + 4), w2 = load_le32(p + 8), w3 = load_le32(p + 12);
    crc = t[15][w0 & 0xFF] ^ t[14][(w0 >> 8) & 0xFF] ^ t[13][(w0 >> 16) & 0xFF] ^ t[12][w0 >> 24] ^
          t[11][w1 & 0xFF] ^ t[10][(w1 >> 8) & 0xFF] ^ t[9][(w1 >> 16) & 0xFF] ^ t[8][w1 >> 24] ^
          t[7][w2 & 0xFF] ^ t[6][(w2 >> 8) & 0xFF] ^ t[5][(w2 >> 16) & 0xFF] ^ t[4][w2 >> 24] ^
          t[3][w3 & 0xFF] ^ t[2][(w3 >> 8) & 0xFF] ^ t[1][(w3 >> 16) & 0xFF] ^ t[0][w3 >> 24];
  }
  for (; bytes > 0; --bytes, ++p) crc = t[0][(crc ^ *p) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

uint32_t crc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2) {
  // The pre- and post-inversion of the CRC cancel here: crc(A+B) = crc(A) * x^(8 len2) ^ crc(B).
  return multiply(shift_by_bytes(len2), crc1) ^ crc2;
}

std::vector<uint32_t> crc32_blocks(const void* data, size_t bytes, size_t block_bytes) {
  if (bytes == 0) return {};
  if (block_bytes == 0 || block_bytes > bytes) block_bytes = bytes;
  const auto* p = static_cast<const unsigned char*>(data);
  const size_t blocks = (bytes + block_bytes - 1) / block_bytes;
  // Each block is cut into pieces of at most 1 MiB, so that a buffer of a few large blocks
  // still keeps every thread busy; a piece is large enough that its lookups dwarf the
  // thread hand-off and the combine that joins the pieces of a block.
  constexpr size_t kPiece = size_t{1} << 20;
  const size_t per_block = (block_bytes + kPiece - 1) / kPiece;
  const size_t piece = (block_bytes + per_block - 1) / per_block;
  // Piece j of block b: its bytes within the buffer (the last block, and so its pieces, may
  // be shorter or empty).
  auto bounds = [&](size_t b, size_t j, size_t* begin) {
    const size_t block_end = std::min((b + 1) * block_bytes, bytes);
    *begin = std::min(b * block_bytes + j * piece, block_end);
    return std::min(*begin + piece, block_end) - *begin;
  };
  std::vector<uint32_t> pieces(blocks * per_block);
  auto work = [&](int64_t first, int64_t last) {
    for (auto i = static_cast<size_t>(first); i < static_cast<size_t>(last); ++i) {
      size_t begin = 0;
      const size_t len = bounds(i / per_block, i % per_block, &begin);
      pieces[i] = crc32(p + begin, len);
    }
  };
  if (bytes < 2 * kPiece) {
    work(0, static_cast<int64_t>(pieces.size()));  // not worth waking the threads
  } else {
    at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, work);
  }
  std::vector<uint32_t> out(blocks);
  for (size_t b = 0; b < blocks; ++b) {
    uint32_t crc = pieces[b * per_block];
    for (size_t j = 1; j < per_block; ++j) {
      size_t begin = 0;
      const size_t len = bounds(b, j, &begin);
      crc = crc32_combine(crc, pieces[b * per_block + j], len);
    }
    out[b] = crc;
  }
  return out;
}

uint32_t crc32_parallel(const void* data, size_t bytes, uint32_t crc) {
  if (bytes < (size_t{2} << 20)) return crc32(data, bytes, crc);  // too small to share out
  return crc32_combine(crc, crc32_blocks(data, bytes, bytes).front(), bytes);
}

}  // namespace hydra::checkpoint
