// CRC-32 of the IEEE 802.3 / zlib polynomial (reflected 0xEDB88320, initial and final value
// 0xFFFFFFFF): the same values as Python's zlib.crc32, which h5py-side checks and the
// checkpoints written so far rely on. Four forms:
//   crc32            slicing-by-16 tables, one thread (about 3 GB/s instead of the ~0.4 GB/s
//                    of one table lookup per byte);
//   crc32_combine    the CRC of A+B from crc(A), crc(B) and B's length, without the bytes;
//   crc32_parallel   large buffers in pieces on ATen's intra-op threads, joined by combine;
//   crc32_blocks     the CRC of each fixed-size block of a buffer, in parallel likewise
//                    (the per-block checksums of checkpoint datasets, h5_file.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hydra::checkpoint {

// CRC-32 of a byte range; `crc` continues a running value (the CRC of the bytes before).
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

// crc32(A + B) from crc1 = crc32(A), crc2 = crc32(B) and len2 = B's length in bytes.
uint32_t crc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

// The same value as crc32(), computed in blocks on several threads when the buffer is large.
uint32_t crc32_parallel(const void* data, size_t bytes, uint32_t crc = 0);

// crc32() of each consecutive `block_bytes` of the buffer (the last block shorter), computed
// in parallel. Empty for an empty buffer; block_bytes 0 means one block of everything.
std::vector<uint32_t> crc32_blocks(const void* data, size_t bytes, size_t block_bytes);

}  // namespace hydra::checkpoint
