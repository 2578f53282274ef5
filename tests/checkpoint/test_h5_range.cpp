// Reads of part of a dataset (H5File::read_range) and the per-block CRC-32s that verify them:
// a range read equals the same slice of the whole read (0-d, 1-d, 2-d and 3-d datasets,
// ranges aligned to neither rows nor blocks, blocks made small so that there are many), reads
// only the blocks it touches, detects a flipped byte in a block it covers while a read that
// does not cover the damaged block succeeds, and datasets written before block checksums
// existed are read whole and checked against their one crc32.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint/crc32.h"
#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace {

namespace fs = std::filesystem;
using hydra::checkpoint::H5File;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("hydra_h5_range_" + std::to_string(::getpid()) + "_" + name)).string();
}

at::Tensor flat(const at::Tensor& t) { return t.reshape({-1}); }

// Flips one bit of the first stored copy of `value` (a double whose bytes occur once).
void flip_byte_of(const std::string& path, double value) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(io)), std::istreambuf_iterator<char>());
  const size_t at_pos = bytes.find(std::string(reinterpret_cast<const char*>(&value), sizeof value));
  ASSERT_NE(at_pos, std::string::npos);
  ASSERT_EQ(bytes.find(std::string(reinterpret_cast<const char*>(&value), sizeof value), at_pos + 1), std::string::npos);
  io.seekp(static_cast<std::streamoff>(at_pos + 3));
  io.put(static_cast<char>(bytes[at_pos + 3] ^ 0x10));
}

TEST(H5Range, BlockChecksumsDescribeTheRawBytes) {
  const std::string path = temp_path("attrs.h5");
  const at::Tensor t = at::randn({37, 13});
  {
    H5File f = H5File::create(path);
    f.write_tensor("/t", t, 40);
    f.write_tensor("/rounded", at::randn({9}), 10);     // float32: 10 bytes round down to 8
    f.write_tensor("/tiny", at::randn({9}, at::kDouble), 3);  // at least one element
    f.write_tensor("/default", at::randn({9}));
  }
  const H5File f = H5File::open_read(path);
  const int64_t bytes = t.numel() * 4;
  EXPECT_EQ(f.attr_int("/t", "crc32_block_bytes"), 40);
  const std::vector<int64_t> blocks = f.attr_ints("/t", "crc32_blocks");
  ASSERT_EQ(static_cast<int64_t>(blocks.size()), (bytes + 39) / 40);
  const auto* raw = static_cast<const unsigned char*>(t.data_ptr());
  for (size_t k = 0; k < blocks.size(); ++k) {
    const int64_t len = std::min<int64_t>(40, bytes - static_cast<int64_t>(k) * 40);
    EXPECT_EQ(static_cast<uint32_t>(blocks[k]), hydra::checkpoint::crc32(raw + k * 40, static_cast<size_t>(len))) << k;
  }
  EXPECT_EQ(static_cast<uint32_t>(f.attr_int("/t", "crc32")), hydra::checkpoint::crc32(raw, static_cast<size_t>(bytes)));
  EXPECT_EQ(f.attr_int("/rounded", "crc32_block_bytes"), 8);
  EXPECT_EQ(f.attr_int("/tiny", "crc32_block_bytes"), 8);
  EXPECT_EQ(f.attr_int("/default", "crc32_block_bytes"), hydra::checkpoint::kCrcBlockBytes);
  EXPECT_EQ(f.attr_ints("/default", "crc32_blocks").size(), 1u);
  fs::remove(path);
}

TEST(H5Range, RangeReadsEqualSlicesOfTheWholeRead) {
  const std::string path = temp_path("slices.h5");
  at::manual_seed(3);
  // name -> (tensor, CRC block bytes): row sizes and block sizes share no multiple.
  const std::vector<std::tuple<std::string, at::Tensor, int64_t>> sets = {
      {"/one_d", at::randn({1000}), 64},
      {"/two_d", at::randn({37, 13}, at::kDouble), 40},
      {"/three_d", at::randn({5, 4, 3}).to(at::kBFloat16), 6},
      {"/wide_rows", at::randn({3, 50}), 12},  // rows larger than blocks
      {"/scalar", at::randn({}), 64},
      {"/empty", at::zeros({0, 4}), 64},
  };
  {
    H5File f = H5File::create(path);
    for (const auto& [name, t, block] : sets) f.write_tensor(name, t, block);
  }
  const H5File f = H5File::open_read(path);
  std::mt19937 gen(7);
  for (const auto& [name, t, block] : sets) {
    const at::Tensor whole = flat(f.read_tensor(name));
    ASSERT_TRUE(at::equal(whole, flat(t))) << name;
    const int64_t n = t.numel();
    std::vector<std::pair<int64_t, int64_t>> ranges = {{0, n}, {0, 0}, {n, n}};
    if (n > 1) ranges.insert(ranges.end(), {{0, 1}, {n - 1, n}, {1, n - 1}});
    for (int i = 0; i < 40 && n > 0; ++i) {
      const int64_t a = std::uniform_int_distribution<int64_t>(0, n)(gen);
      const int64_t b = std::uniform_int_distribution<int64_t>(0, n)(gen);
      ranges.emplace_back(std::min(a, b), std::max(a, b));
    }
    for (const auto& [begin, end] : ranges) {
      for (bool verify : {true, false}) {
        const at::Tensor part = f.read_range(name, begin, end, verify);
        EXPECT_EQ(part.scalar_type(), t.scalar_type()) << name;
        ASSERT_EQ(part.dim(), 1) << name;
        EXPECT_TRUE(at::equal(part, whole.narrow(0, begin, end - begin)))
            << name << " [" << begin << ", " << end << ") verify " << verify;
      }
    }
  }
  EXPECT_THROW(f.read_range("/one_d", 10, 1001), hydra::common::InputError);
  fs::remove(path);
}

TEST(H5Range, ReadsOnlyTheBlocksTheRangeTouches) {
  const std::string path = temp_path("count.h5");
  {
    H5File f = H5File::create(path);
    f.write_tensor("/v", at::randn({1000}), 64);                    // blocks of 16 elements
    f.write_tensor("/m", at::randn({40, 10}, at::kDouble), 8 * 25);  // blocks of 2.5 rows
  }
  const H5File f = H5File::open_read(path);
  f.read_range("/v", 100, 110);  // inside block 6: elements 96..111
  EXPECT_EQ(f.bytes_read(), 16 * 4);
  f.read_range("/v", 95, 97);  // blocks 5 and 6
  EXPECT_EQ(f.bytes_read(), 16 * 4 + 32 * 4);
  const int64_t before = f.bytes_read();
  f.read_range("/m", 52, 53);  // block 2 (elements 50..74): rows 5..7
  EXPECT_EQ(f.bytes_read() - before, 3 * 10 * 8);
  f.read_tensor("/v");
  EXPECT_EQ(f.bytes_read() - before, 3 * 10 * 8 + 1000 * 4);
  fs::remove(path);
}

TEST(H5Range, DamageIsFoundExactlyInTheBlocksAReadCovers) {
  const std::string path = temp_path("flip.h5");
  at::Tensor t = at::arange(256, at::kDouble) + 0.5;
  t[100] = 1234.5;  // a byte pattern found once in the file: element 100, in block 3
  {
    H5File f = H5File::create(path);
    f.write_tensor("/optim/master/w", t, 32 * 8);  // blocks of 32 elements
  }
  flip_byte_of(path, 1234.5);
  const H5File f = H5File::open_read(path);
  // Reads that do not touch block 3 (elements 96..127) succeed and are right.
  EXPECT_TRUE(at::equal(f.read_range("/optim/master/w", 0, 96), t.narrow(0, 0, 96)));
  EXPECT_TRUE(at::equal(f.read_range("/optim/master/w", 128, 256), t.narrow(0, 128, 128)));
  // Reads that touch it fail, naming the file, the dataset and the block, also when the
  // damaged element itself is not among those asked for.
  for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{90, 97}, {100, 101}, {120, 200}, {0, 256}}) {
    try {
      f.read_range("/optim/master/w", begin, end);
      FAIL() << "damage not detected reading [" << begin << ", " << end << ")";
    } catch (const hydra::common::InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_NE(what.find("/optim/master/w"), std::string::npos) << what;
      EXPECT_NE(what.find("checksum mismatch in block 3"), std::string::npos) << what;
    }
  }
  EXPECT_THROW(f.read_tensor("/optim/master/w"), hydra::common::InputError);
  // Unverified reads do not look.
  EXPECT_NO_THROW(f.read_range("/optim/master/w", 100, 101, /*verify_crc=*/false));
  fs::remove(path);
}

// A checkpoint written before block checksums existed has only the whole-dataset crc32:
// a range of it reads the dataset whole (to check that CRC) and returns the slice.
TEST(H5Range, DatasetsWithoutBlockChecksumsAreReadWholeAndChecked) {
  const std::string path = temp_path("old.h5");
  at::Tensor t = at::arange(256, at::kDouble) + 0.5;
  t[200] = 1234.5;
  {
    H5File f = H5File::create(path);
    f.write_tensor("/w", t, 64);
    f.write_tensor("/m", at::randn({6, 7}), 64);
  }
  const std::string strip = "/usr/bin/python3 -c 'import sys, h5py\n"
                            "with h5py.File(sys.argv[1], \"r+\") as f:\n"
                            "    for d in (f[\"w\"], f[\"m\"]):\n"
                            "        del d.attrs[\"crc32_blocks\"]; del d.attrs[\"crc32_block_bytes\"]' " + path;
  ASSERT_EQ(std::system(strip.c_str()), 0) << strip;
  {
    const H5File f = H5File::open_read(path);
    ASSERT_FALSE(f.has_attr("/w", "crc32_blocks"));
    EXPECT_TRUE(at::equal(f.read_range("/w", 10, 20), t.narrow(0, 10, 10)));
    EXPECT_EQ(f.bytes_read(), 256 * 8);  // whole
    const at::Tensor m = f.read_tensor("/m");
    EXPECT_TRUE(at::equal(f.read_range("/m", 5, 30), flat(m).narrow(0, 5, 25)));
  }
  flip_byte_of(path, 1234.5);
  const H5File f = H5File::open_read(path);
  try {
    f.read_range("/w", 10, 20);  // far from the damage, but only the whole CRC can vouch for it
    FAIL() << "damage not detected";
  } catch (const hydra::common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

}  // namespace
