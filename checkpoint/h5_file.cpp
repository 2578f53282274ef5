#include "checkpoint/h5_file.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "checkpoint/crc32.h"
#include "checkpoint/h5_detail.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using common::InputError;
using h5_detail::Handle;

// Called before the first HDF5 call of each file operation.
void prepare_hdf5() {
  // HDF5 1.10 keeps the id of a file whose H5Fclose failed (a full disk at the final metadata
  // flush) after freeing the file, and its atexit cleanup closes that id again: a segfault
  // at exit after a failed save. Every file we open is closed by H5File, so that cleanup has
  // nothing of ours to do; it is never installed (H5dont_atexit must precede HDF5's start).
  static const bool no_cleanup_at_exit = H5dont_atexit() >= 0;
  (void)no_cleanup_at_exit;
  // HDF5 prints its error stack to stderr by default; we collect it into the exception.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

herr_t collect_error(unsigned /*n*/, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (err->desc && *err->desc) {
    if (!text->empty()) *text += "; ";
    *text += err->desc;
  }
  return 0;
}

// A 16-bit IEEE-style float type: HDF5 1.10 predefines none. bf16 is float32 with the low 16
// mantissa bits cut off (8 exponent bits, bias 127), so h5py widens it to float32 exactly;
// half has 5 exponent bits and bias 15.
hid_t make_float16_type(size_t exponent_bits, size_t bias) {
  const size_t mantissa_bits = 15 - exponent_bits;
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, mantissa_bits, exponent_bits, 0, mantissa_bits);
  H5Tset_precision(t, 16);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, bias);
  return t;
}

hid_t link_create_props() {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

}  // namespace

std::string h5_detail::hdf5_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  if (text.empty()) return "unknown HDF5 error";
  // The operating system's reason (e.g. "No space left on device") first: it is what the
  // user acts on, and the stack around it is long.
  const std::string key = "error message = '";
  const size_t from = text.find(key);
  if (from == std::string::npos) return text;
  const size_t begin = from + key.size();
  return text.substr(begin, text.find('\'', begin) - begin) + "; HDF5: " + text;
}

hid_t h5_detail::type_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return H5Tcopy(H5T_IEEE_F32LE);
    case at::kDouble: return H5Tcopy(H5T_IEEE_F64LE);
    case at::kBFloat16: return make_float16_type(8, 127);
    case at::kHalf: return make_float16_type(5, 15);
    case at::kLong: return H5Tcopy(H5T_STD_I64LE);
    case at::kInt: return H5Tcopy(H5T_STD_I32LE);
    case at::kByte: return H5Tcopy(H5T_STD_U8LE);
    default: return -1;
  }
}

at::ScalarType h5_detail::dtype_of(hid_t type, const std::string& file, const std::string& object) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size == 4) return at::kFloat;
    if (size == 8) return at::kDouble;
    if (size == 2) return H5Tget_ebias(type) == 127 ? at::kBFloat16 : at::kHalf;
  }
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 8 && is_signed) return at::kLong;
    if (size == 4 && is_signed) return at::kInt;
    if (size == 1 && !is_signed) return at::kByte;
  }
  HYDRA_FAIL(InputError, file << ": " << object << ": unsupported stored type (class " << cls << ", "
                              << size << " bytes)");
}

H5File H5File::create(const std::string& path) {
  prepare_hdf5();
  // The 1.8 file format or later: its metadata (object headers with their attributes, group
  // indexes) carries checksums, so damage outside the datasets' bytes is detected on open
  // too, not only damage to tensor data (our crc32). HDF5 >= 1.8 and h5py read it.
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  HYDRA_H5_WRITE_CHECK(id, path, "/", "create");
  return H5File(id, path);
}

H5File H5File::open_read(const std::string& path) {
  prepare_hdf5();
  if (access(path.c_str(), R_OK) != 0) HYDRA_FAIL(InputError, path << ": cannot open (missing or unreadable)");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  HYDRA_H5_CHECK(id, path, "/", "open (not an HDF5 file, or truncated)");
  return H5File(id, path);
}

H5File::H5File(H5File&& other) noexcept
    : id_(std::exchange(other.id_, -1)), path_(std::move(other.path_)), bytes_read_(other.bytes_read_) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    close();
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
    bytes_read_ = other.bytes_read_;
  }
  return *this;
}

H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

void H5File::close() {
  if (id_ < 0) return;
  const herr_t rc = H5Fclose(id_);
  id_ = -1;
  HYDRA_H5_WRITE_CHECK(rc, path_, "/", "close");
}

void H5File::flush() { HYDRA_H5_WRITE_CHECK(H5Fflush(id_, H5F_SCOPE_GLOBAL), path_, "/", "flush"); }

void H5File::write_tensor(const std::string& object, const at::Tensor& tensor, int64_t crc_block_bytes) {
  HYDRA_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), object << ": write a contiguous CPU tensor");
  Handle type(h5_detail::type_of(tensor.scalar_type()), H5Tclose);
  HYDRA_CHECK(type.id >= 0, object << ": unsupported dtype " << tensor.scalar_type());
  std::vector<hsize_t> dims(tensor.sizes().begin(), tensor.sizes().end());
  Handle space(tensor.dim() == 0 ? H5Screate(H5S_SCALAR)
                                 : H5Screate_simple(tensor.dim(), dims.data(), nullptr), H5Sclose);
  Handle lcpl(link_create_props(), H5Pclose);
  Handle dset(H5Dcreate2(id_, object.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  HYDRA_H5_WRITE_CHECK(dset.id, path_, object, "create dataset");
  // Raw bits, memory type = file type: no conversion (bf16 included).
  if (tensor.numel() > 0) {
    HYDRA_H5_WRITE_CHECK(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data_ptr()), path_, object, "write");
  }
  // One parallel pass: the CRC of each block (so that a partial read can be verified,
  // h5_read.cpp), and the whole dataset's CRC joined from them.
  const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
  const int64_t block = crc_block_size(crc_block_bytes, static_cast<int64_t>(tensor.element_size()));
  const std::vector<uint32_t> blocks =
      crc32_blocks(tensor.data_ptr(), static_cast<size_t>(bytes), static_cast<size_t>(block));
  uint32_t whole = 0;
  std::vector<int64_t> stored(blocks.size());
  for (size_t k = 0; k < blocks.size(); ++k) {
    const int64_t len = std::min(block, bytes - static_cast<int64_t>(k) * block);  // the last is shorter
    whole = crc32_combine(whole, blocks[k], static_cast<uint64_t>(len));
    stored[k] = blocks[k];
  }
  set_attr(object, "crc32", static_cast<int64_t>(whole));
  set_attr(object, "crc32_block_bytes", block);
  set_attr(object, "crc32_blocks", stored);
}

int64_t crc_block_size(int64_t wanted, int64_t element_size) {
  HYDRA_CHECK(wanted > 0 && element_size > 0, "CRC block of " << wanted << " bytes for elements of " << element_size);
  return std::max(element_size, wanted / element_size * element_size);
}

bool H5File::exists(const std::string& object) const {
  if (object == "/") return true;
  // Each prefix must exist before H5Lexists may be asked about the next level.
  size_t pos = 0;
  while ((pos = object.find('/', pos + 1)) != std::string::npos) {
    if (H5Lexists(id_, object.substr(0, pos).c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return H5Lexists(id_, object.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
  HYDRA_H5_CHECK(g.id, path_, group, "open group");
  std::vector<std::string> names;
  H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, nullptr,
             [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
               static_cast<std::vector<std::string>*>(out)->emplace_back(name);
               return 0;
             },
             &names);
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// Writes one attribute, replacing an existing one of the same name.
void write_attr(hid_t file, const std::string& path, const std::string& object, const std::string& name,
                hid_t type, hid_t space, const void* data) {
  Handle obj(H5Oopen(file, object.c_str(), H5P_DEFAULT), H5Oclose);
  HYDRA_H5_WRITE_CHECK(obj.id, path, object, "open object");
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle attr(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  HYDRA_H5_WRITE_CHECK(attr.id, path, object, "create attribute " + name);
  HYDRA_H5_WRITE_CHECK(H5Awrite(attr, type, data), path, object, "write attribute " + name);
}

hid_t string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

}  // namespace

void H5File::set_attr(const std::string& object, const std::string& name, const std::string& value) {
  Handle type(string_type(), H5Tclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  const char* ptr = value.c_str();
  write_attr(id_, path_, object, name, type, space, &ptr);
}

void H5File::set_attr(const std::string& object, const std::string& name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  write_attr(id_, path_, object, name, H5T_NATIVE_INT64, space, &value);
}

void H5File::set_attr(const std::string& object, const std::string& name, double value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  write_attr(id_, path_, object, name, H5T_NATIVE_DOUBLE, space, &value);
}

void H5File::set_attr(const std::string& object, const std::string& name, const std::vector<int64_t>& value) {
  const hsize_t n = value.size();
  Handle space(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr), H5Sclose);
  // An empty list (e.g. the crc32_blocks of an empty dataset) writes nothing, but HDF5
  // refuses a null buffer, which an empty vector may hand out.
  const int64_t none = 0;
  write_attr(id_, path_, object, name, H5T_NATIVE_INT64, space, value.empty() ? &none : value.data());
}

bool H5File::has_attr(const std::string& object, const std::string& name) const {
  return H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

namespace {

struct OpenAttr {
  Handle attr;
  OpenAttr(hid_t file, const std::string& path, const std::string& object, const std::string& name)
      : attr(H5Aopen_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose) {
    HYDRA_H5_CHECK(attr.id, path, object, "open attribute " + name);
  }
};

}  // namespace

std::string H5File::attr_string(const std::string& object, const std::string& name) const {
  OpenAttr a(id_, path_, object, name);
  Handle type(H5Aget_type(a.attr), H5Tclose);
  if (H5Tis_variable_str(type) > 0) {
    Handle mem(string_type(), H5Tclose);
    char* ptr = nullptr;
    HYDRA_H5_CHECK(H5Aread(a.attr, mem, &ptr), path_, object, "read attribute " + name);
    std::string out = ptr ? ptr : "";
    Handle space(H5Aget_space(a.attr), H5Sclose);
    H5Dvlen_reclaim(mem, space, H5P_DEFAULT, &ptr);
    return out;
  }
  std::string out(H5Tget_size(type), '\0');  // fixed-length string
  HYDRA_H5_CHECK(H5Aread(a.attr, type, out.data()), path_, object, "read attribute " + name);
  out.resize(std::strlen(out.c_str()));
  return out;
}

int64_t H5File::attr_int(const std::string& object, const std::string& name) const {
  OpenAttr a(id_, path_, object, name);
  int64_t v = 0;
  HYDRA_H5_CHECK(H5Aread(a.attr, H5T_NATIVE_INT64, &v), path_, object, "read attribute " + name);
  return v;
}

double H5File::attr_double(const std::string& object, const std::string& name) const {
  OpenAttr a(id_, path_, object, name);
  double v = 0;
  HYDRA_H5_CHECK(H5Aread(a.attr, H5T_NATIVE_DOUBLE, &v), path_, object, "read attribute " + name);
  return v;
}

std::vector<int64_t> H5File::attr_ints(const std::string& object, const std::string& name) const {
  OpenAttr a(id_, path_, object, name);
  Handle space(H5Aget_space(a.attr), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<int64_t> v(static_cast<size_t>(std::max<hssize_t>(n, 0)));
  if (!v.empty()) HYDRA_H5_CHECK(H5Aread(a.attr, H5T_NATIVE_INT64, v.data()), path_, object, "read attribute " + name);
  return v;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) HYDRA_FAIL(common::RuntimeFailure, path << ": cannot open for fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) HYDRA_FAIL(common::RuntimeFailure, path << ": fsync failed");
}

}  // namespace hydra::checkpoint
