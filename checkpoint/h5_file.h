// A thin RAII layer over the HDF5 C API for checkpoints: tensors as datasets with their real
// dtypes (bf16 as a 16-bit float type that h5py reads as float32), attributes, groups, and
// CRC-32s per dataset (of the whole and of each block, so that a read of part of a dataset
// is verified too). Every HDF5 call is checked; a failure throws naming the file, the object
// and HDF5's own message (the error stack), never prints and continues: InputError when
// reading (a damaged file), RuntimeFailure when writing (a full disk).
// Written by h5_file.cpp (files, writing, attributes) and h5_read.cpp (reading datasets).
//
// Object paths are HDF5 paths ("/model/blocks.0.layers.3.attn.wq"): parameter names keep
// their dots inside one dataset name, so h5py users write f["model"]["embed.weight"].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/crc32.h"  // crc32(), which callers of this header used to find here

namespace hydra::checkpoint {

// The default size of a dataset's CRC-32 blocks (attribute crc32_block_bytes): large enough
// that the list stays short (a 1 GB tensor has 256 of them) and reads of a few blocks pay
// little per block, small enough that a ZeRO rank reading 1/8 of a tensor reads about that.
constexpr int64_t kCrcBlockBytes = int64_t{4} << 20;
// `wanted` rounded down to a whole number of elements (at least one).
int64_t crc_block_size(int64_t wanted, int64_t element_size);

class H5File {
 public:
  // Creates (truncating; RuntimeFailure on failure) or opens read-only (InputError), naming `path`.
  static H5File create(const std::string& path);
  static H5File open_read(const std::string& path);

  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  const std::string& path() const { return path_; }

  // Writes a contiguous CPU tensor (float32, float64, bfloat16, float16, int64, int32, uint8)
  // as a dataset; parent groups are created. Adds attributes over the raw row-major bytes:
  // "crc32" (all of them), "crc32_block_bytes" (crc_block_size(crc_block_bytes, element
  // size)) and "crc32_blocks" (the CRC of each consecutive block, the last one shorter).
  void write_tensor(const std::string& object, const at::Tensor& tensor, int64_t crc_block_bytes = kCrcBlockBytes);
  // Reads a dataset into a new CPU tensor of the stored dtype. verify_crc: recompute the
  // CRC-32s and throw InputError naming file and dataset (and block) on mismatch.
  at::Tensor read_tensor(const std::string& object, bool verify_crc = true) const;
  // Elements [begin, end) of the dataset's row-major flattening, as a 1-D tensor of the stored
  // dtype. Reads whole rows of dim 0 covering every CRC block the range touches, and checks
  // each of those blocks (verify_crc); blocks it does not touch are neither read nor checked.
  // A dataset without crc32_blocks (written before they existed) is read whole and checked
  // against its crc32.
  at::Tensor read_range(const std::string& object, int64_t begin, int64_t end, bool verify_crc = true) const;
  std::vector<int64_t> dataset_shape(const std::string& object) const;
  // Dataset bytes read from the file through this handle so far (to show partial reads).
  int64_t bytes_read() const { return bytes_read_; }

  bool exists(const std::string& object) const;
  // Names of the direct children of a group, sorted.
  std::vector<std::string> list(const std::string& group) const;

  // Attributes on an object ("/" for the file). Strings are variable-length UTF-8 (h5py
  // returns str); integer lists are int64 arrays.
  void set_attr(const std::string& object, const std::string& name, const std::string& value);
  void set_attr(const std::string& object, const std::string& name, int64_t value);
  void set_attr(const std::string& object, const std::string& name, double value);
  void set_attr(const std::string& object, const std::string& name, const std::vector<int64_t>& value);
  std::string attr_string(const std::string& object, const std::string& name) const;
  int64_t attr_int(const std::string& object, const std::string& name) const;
  double attr_double(const std::string& object, const std::string& name) const;
  std::vector<int64_t> attr_ints(const std::string& object, const std::string& name) const;
  bool has_attr(const std::string& object, const std::string& name) const;

  // Flushes HDF5's buffers to the OS (the caller fsyncs the file after closing).
  void flush();
  void close();

 private:
  H5File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  // The rows [row_begin, row_end) of dim 0 (all of a 0-d dataset), flattened.
  at::Tensor read_rows(const std::string& object, int64_t row_begin, int64_t row_end) const;
  int64_t id_ = -1;  // hid_t
  std::string path_;
  mutable int64_t bytes_read_ = 0;
};

// fsync()s a file or directory by path (after close, before the rename that publishes it).
void fsync_path(const std::string& path);

}  // namespace hydra::checkpoint
