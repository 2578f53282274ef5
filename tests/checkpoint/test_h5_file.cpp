// The HDF5 layer: every dtype round-trips bit for bit, attributes round-trip, h5py reads what
// we write (checked by a Python script against numpy, and our CRC-32s against zlib's), and
// corruption is detected. Reads of part of a dataset: test_h5_range.cpp.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/h5_file.h"
#include "common/errors.h"

namespace {

namespace fs = std::filesystem;
using hydra::checkpoint::H5File;

at::Tensor base_values() {  // -1.0, -0.75, ..., 1.75: exact in bf16
  return at::arange(12, at::kDouble).reshape({3, 4}) * 0.25 - 1.0;
}

std::string write_sample(const std::string& name) {
  const std::string path = (fs::temp_directory_path() / name).string();
  H5File f = H5File::create(path);
  f.write_tensor("/model/w.f32", base_values().to(at::kFloat).contiguous(), 16);  // 3 CRC blocks
  f.write_tensor("/model/w.bf16", base_values().to(at::kBFloat16).contiguous());
  f.write_tensor("/model/v.f64", at::arange(5, at::kDouble) / 3.0, 24);  // 2 blocks, the last shorter
  f.write_tensor("/state/i64", at::arange(6, at::kLong) - 3);
  f.set_attr("/", "format", std::string("hydra-test"));
  f.set_attr("/", "step", int64_t{42});
  f.set_attr("/", "loss", 2.5);
  f.set_attr("/model/w.f32", "global_shape", std::vector<int64_t>{3, 4});
  f.close();
  return path;
}

TEST(H5File, EveryDtypeRoundTripsBitForBit) {
  const std::string path = write_sample("hydra_h5_roundtrip.h5");
  const H5File f = H5File::open_read(path);
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kDouble, at::kHalf}) {
    H5File w = H5File::create(path + ".d");
    const at::Tensor t = at::randn({7, 3}, at::kDouble).to(dtype).contiguous();
    w.write_tensor("/x", t);
    w.close();
    const at::Tensor back = H5File::open_read(path + ".d").read_tensor("/x");
    EXPECT_EQ(back.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(back, t)) << dtype;
  }
  EXPECT_TRUE(at::equal(f.read_tensor("/state/i64"), at::arange(6, at::kLong) - 3));
  EXPECT_EQ(f.attr_string("/", "format"), "hydra-test");
  EXPECT_EQ(f.attr_int("/", "step"), 42);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "loss"), 2.5);
  EXPECT_EQ(f.attr_ints("/model/w.f32", "global_shape"), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(f.list("/model"), (std::vector<std::string>{"v.f64", "w.bf16", "w.f32"}));
  EXPECT_TRUE(f.exists("/model/w.f32"));
  EXPECT_FALSE(f.exists("/nope/w"));
}

TEST(H5File, H5pyReadsWhatWeWrite) {
  const std::string path = write_sample("hydra_h5_h5py.h5");
  const std::string cmd = "/usr/bin/python3 " HYDRA_SOURCE_DIR "/tests/checkpoint/check_h5_with_h5py.py " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(H5File, FlippedByteFailsTheChecksumNamingTheDataset) {
  const std::string path = (fs::temp_directory_path() / "hydra_h5_flip.h5").string();
  const at::Tensor t = at::full({256}, 1234.5, at::kDouble);  // a byte pattern easy to find
  {
    H5File f = H5File::create(path);
    f.write_tensor("/model/target", t);
    f.close();
  }
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(io)), std::istreambuf_iterator<char>());
  const double v = 1234.5;
  const size_t at_pos = bytes.find(std::string(reinterpret_cast<const char*>(&v), sizeof v));
  ASSERT_NE(at_pos, std::string::npos);
  io.seekp(static_cast<std::streamoff>(at_pos + 3));
  io.put(static_cast<char>(bytes[at_pos + 3] ^ 0x10));
  io.close();
  try {
    H5File::open_read(path).read_tensor("/model/target");
    FAIL() << "corruption not detected";
  } catch (const hydra::common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/model/target"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
}

TEST(H5File, TruncatedOrMissingFileIsInputErrorNamingIt) {
  const std::string path = write_sample("hydra_h5_trunc.h5");
  fs::resize_file(path, fs::file_size(path) / 2);
  try {
    H5File f = H5File::open_read(path);
    f.read_tensor("/model/w.f32");
    FAIL() << "truncation not detected";
  } catch (const hydra::common::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(H5File::open_read("/nonexistent/x.h5"), hydra::common::InputError);
}

TEST(H5File, Crc32KnownValue) {
  // The standard check value of CRC-32/ISO-HDLC (tests/checkpoint/test_crc32.cpp has more).
  EXPECT_EQ(hydra::checkpoint::crc32("123456789", 9), 0xCBF43926u);
}

}  // namespace
