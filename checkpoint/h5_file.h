// A thin RAII layer over the HDF5 C API for checkpoints: tensors as datasets with their real
// dtypes (bf16 as a 16-bit float type that h5py reads as float32), attributes, groups, and
// a CRC-32 per dataset. Every HDF5 call is checked; a failure throws InputError naming the
// file, the object and HDF5's own message (the error stack), never prints and continues.
//
// Object paths are HDF5 paths ("/model/blocks.0.layers.3.attn.wq"): parameter names keep
// their dots inside one dataset name, so h5py users write f["model"]["embed.weight"].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hydra::checkpoint {

class H5File {
 public:
  // Creates (truncating) or opens read-only. Throws InputError naming `path` on failure.
  static H5File create(const std::string& path);
  static H5File open_read(const std::string& path);

  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  const std::string& path() const { return path_; }

  // Writes a contiguous CPU tensor (float32, float64, bfloat16, float16, int64, int32, uint8)
  // as a dataset; parent groups are created. Adds attribute "crc32" over the raw bytes.
  void write_tensor(const std::string& object, const at::Tensor& tensor);
  // Reads a dataset into a new CPU tensor of the stored dtype. verify_crc: recompute the
  // CRC-32 and throw InputError naming file and dataset on mismatch.
  at::Tensor read_tensor(const std::string& object, bool verify_crc = true) const;
  std::vector<int64_t> dataset_shape(const std::string& object) const;

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
  int64_t id_ = -1;  // hid_t
  std::string path_;
};

// CRC-32 (IEEE 802.3, the zlib polynomial) of a byte range; `crc` continues a running value.
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

// fsync()s a file or directory by path (after close, before the rename that publishes it).
void fsync_path(const std::string& path);

}  // namespace hydra::checkpoint
