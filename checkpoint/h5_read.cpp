// Reading datasets, whole or a flat element range, with their CRC-32s checked. A range is
// widened to the CRC blocks it touches (each is read entirely, so that it can be checked)
// and then to whole rows of dim 0 (one HDF5 hyperslab); the blocks it does not touch are
// never read. Datasets from before the block checksums are read whole (their one crc32).
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>

#include <algorithm>

#include "checkpoint/crc32.h"
#include "checkpoint/h5_detail.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using common::InputError;
using h5_detail::Handle;

// A dataset's stored checksums, checked for consistency with its size.
struct StoredCrcs {
  bool has_whole = false;
  bool has_blocks = false;
  uint32_t whole = 0;
  int64_t block_bytes = 0;
  std::vector<int64_t> blocks;
};

StoredCrcs stored_crcs(const H5File& f, const std::string& object, int64_t bytes, int64_t element_size) {
  StoredCrcs s;
  s.has_whole = f.has_attr(object, "crc32");
  if (s.has_whole) s.whole = static_cast<uint32_t>(f.attr_int(object, "crc32"));
  s.has_blocks = f.has_attr(object, "crc32_blocks") && f.has_attr(object, "crc32_block_bytes");
  if (!s.has_blocks) return s;
  s.block_bytes = f.attr_int(object, "crc32_block_bytes");
  s.blocks = f.attr_ints(object, "crc32_blocks");
  // Block boundaries must fall between elements, or a block could not be read by itself.
  const bool sane = s.block_bytes > 0 && s.block_bytes % element_size == 0 &&
                    static_cast<int64_t>(s.blocks.size()) == (bytes + s.block_bytes - 1) / s.block_bytes;
  if (!sane) {
    HYDRA_FAIL(InputError, f.path() << ": " << object << ": malformed block checksums (" << s.blocks.size()
                                    << " blocks of " << s.block_bytes << " bytes for " << bytes
                                    << " bytes): the file is corrupted");
  }
  return s;
}

// Checks CRC blocks [first, last) of a dataset of `total` bytes against `data`, which holds
// its bytes from the start of block `first` on. Returns the CRCs it computed.
std::vector<uint32_t> verify_blocks(const std::string& file, const std::string& object, const StoredCrcs& s,
                                    const unsigned char* data, int64_t total, int64_t first, int64_t last) {
  const int64_t begin = first * s.block_bytes;
  const int64_t end = std::min(last * s.block_bytes, total);
  std::vector<uint32_t> actual = crc32_blocks(data, static_cast<size_t>(end - begin), static_cast<size_t>(s.block_bytes));
  for (int64_t k = first; k < last; ++k) {
    const auto stored = static_cast<uint32_t>(s.blocks[static_cast<size_t>(k)]);
    const uint32_t got = actual[static_cast<size_t>(k - first)];
    if (stored != got) {
      HYDRA_FAIL(InputError, file << ": " << object << ": checksum mismatch in block " << k << " (bytes "
                                  << k * s.block_bytes << " to " << std::min((k + 1) * s.block_bytes, total)
                                  << "; stored crc32 " << stored << ", data has " << got << "): the file is corrupted");
    }
  }
  return actual;
}

[[noreturn]] void fail_whole(const std::string& file, const std::string& object, uint32_t stored, uint32_t actual) {
  HYDRA_FAIL(InputError, file << ": " << object << ": checksum mismatch (stored crc32 " << stored << ", data has "
                              << actual << "): the file is corrupted");
}

}  // namespace

std::vector<int64_t> H5File::dataset_shape(const std::string& object) const {
  Handle dset(H5Dopen2(id_, object.c_str(), H5P_DEFAULT), H5Dclose);
  HYDRA_H5_CHECK(dset.id, path_, object, "open dataset");
  Handle space(H5Dget_space(dset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  HYDRA_H5_CHECK(rank, path_, object, "read shape");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

at::Tensor H5File::read_rows(const std::string& object, int64_t row_begin, int64_t row_end) const {
  Handle dset(H5Dopen2(id_, object.c_str(), H5P_DEFAULT), H5Dclose);
  HYDRA_H5_CHECK(dset.id, path_, object, "open dataset");
  Handle type(H5Dget_type(dset), H5Tclose);
  const at::ScalarType dtype = h5_detail::dtype_of(type, path_, object);
  Handle file_space(H5Dget_space(dset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(file_space);
  HYDRA_H5_CHECK(rank, path_, object, "read shape");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(file_space, dims.data(), nullptr);
  if (rank == 0) row_begin = 0, row_end = 1;  // a scalar is one row of one element
  int64_t inner = 1;
  for (int d = 1; d < rank; ++d) inner *= static_cast<int64_t>(dims[d]);
  at::Tensor out = at::empty({(row_end - row_begin) * inner}, at::TensorOptions().dtype(dtype));
  if (out.numel() == 0) return out;
  // Memory type = file type: the raw bits, no conversion (bf16 included).
  herr_t rc = 0;
  if (rank == 0) {
    rc = H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr());
  } else {
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    start[0] = static_cast<hsize_t>(row_begin);
    count[0] = static_cast<hsize_t>(row_end - row_begin);
    HYDRA_H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
                   path_, object, "select rows");
    Handle mem_space(H5Screate_simple(rank, count.data(), nullptr), H5Sclose);
    rc = H5Dread(dset, type, mem_space, file_space, H5P_DEFAULT, out.data_ptr());
  }
  HYDRA_H5_CHECK(rc, path_, object, "read");
  bytes_read_ += out.numel() * static_cast<int64_t>(out.element_size());
  return out;
}

at::Tensor H5File::read_tensor(const std::string& object, bool verify_crc) const {
  const std::vector<int64_t> shape = dataset_shape(object);
  const at::Tensor flat = read_rows(object, 0, shape.empty() ? 1 : shape[0]);
  if (verify_crc) {
    const int64_t bytes = flat.numel() * static_cast<int64_t>(flat.element_size());
    const auto* data = static_cast<const unsigned char*>(flat.data_ptr());
    const StoredCrcs s = stored_crcs(*this, object, bytes, static_cast<int64_t>(flat.element_size()));
    if (s.has_blocks) {
      const int64_t blocks = static_cast<int64_t>(s.blocks.size());
      const std::vector<uint32_t> actual = verify_blocks(path_, object, s, data, bytes, 0, blocks);
      // The whole-dataset crc32 (what h5py-side checks use) must agree with the blocks too.
      uint32_t whole = 0;
      for (int64_t k = 0; k < blocks; ++k) {
        whole = crc32_combine(whole, actual[static_cast<size_t>(k)],
                              static_cast<uint64_t>(std::min(s.block_bytes, bytes - k * s.block_bytes)));
      }
      if (s.has_whole && whole != s.whole) fail_whole(path_, object, s.whole, whole);
    } else if (s.has_whole) {
      const uint32_t actual = crc32_parallel(data, static_cast<size_t>(bytes));
      if (actual != s.whole) fail_whole(path_, object, s.whole, actual);
    }
  }
  return flat.view(shape);
}

at::Tensor H5File::read_range(const std::string& object, int64_t begin, int64_t end, bool verify_crc) const {
  const std::vector<int64_t> shape = dataset_shape(object);
  const int64_t numel = element_count(shape);
  if (begin < 0 || end < begin || end > numel) {
    HYDRA_FAIL(InputError, path_ << ": " << object << ": elements [" << begin << ", " << end << ") asked of a dataset of "
                                 << numel);
  }
  Handle dset(H5Dopen2(id_, object.c_str(), H5P_DEFAULT), H5Dclose);
  HYDRA_H5_CHECK(dset.id, path_, object, "open dataset");
  Handle type(H5Dget_type(dset), H5Tclose);
  const at::ScalarType dtype = h5_detail::dtype_of(type, path_, object);
  if (begin == end) return at::empty({0}, at::TensorOptions().dtype(dtype));
  const auto element = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t bytes = numel * element;
  StoredCrcs s;
  if (verify_crc) {
    s = stored_crcs(*this, object, bytes, element);
    if (!s.has_blocks) return read_tensor(object, true).reshape({-1}).narrow(0, begin, end - begin);
  }
  // Widen [begin, end) to the CRC blocks it touches, then to whole rows of dim 0.
  int64_t first_block = 0, last_block = 0, lo = begin, hi = end;
  if (verify_crc) {
    first_block = begin * element / s.block_bytes;
    last_block = (end * element + s.block_bytes - 1) / s.block_bytes;
    lo = first_block * s.block_bytes / element;
    hi = std::min(last_block * s.block_bytes, bytes) / element;
  }
  const int64_t inner = shape.empty() ? 1 : numel / shape[0];
  const int64_t first_row = lo / inner;
  const at::Tensor rows = read_rows(object, first_row, (hi + inner - 1) / inner);
  if (verify_crc) {
    const auto* data = static_cast<const unsigned char*>(rows.data_ptr());
    verify_blocks(path_, object, s, data + (lo - first_row * inner) * element, bytes, first_block, last_block);
  }
  return rows.narrow(0, begin - first_row * inner, end - begin);
}

}  // namespace hydra::checkpoint
