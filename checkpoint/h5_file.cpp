#include "checkpoint/h5_file.h"

#include <ATen/ops/empty.h>
#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using common::InputError;

// HDF5 prints its error stack to stderr by default; we collect it into the exception
// instead. Called once before the first HDF5 call of each file operation.
void silence_hdf5_printing() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

herr_t collect_error(unsigned /*n*/, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (err->desc && *err->desc) {
    if (!text->empty()) *text += "; ";
    *text += err->desc;
  }
  return 0;
}

std::string hdf5_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "unknown HDF5 error" : text;
}

// Throws InputError "<file>: <object>: <what> failed: <HDF5 stack>" when `rc` < 0.
#define HYDRA_H5_CHECK(rc, file, object, what)                                              \
  do {                                                                                      \
    if ((rc) < 0) {                                                                         \
      HYDRA_FAIL(InputError, file << ": " << object << ": " << what << " failed: " << hdf5_error_text()); \
    }                                                                                       \
  } while (0)

// Closes an HDF5 handle of any kind when it goes out of scope.
struct Handle {
  hid_t id = -1;
  herr_t (*closer)(hid_t) = nullptr;
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), closer(c) {}
  Handle(const Handle&) = delete;
  ~Handle() {
    if (id >= 0 && closer) closer(id);
  }
  operator hid_t() const { return id; }
};

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

// The file/memory type of a tensor dtype (a new handle the caller closes).
hid_t type_of(at::ScalarType dtype) {
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

at::ScalarType dtype_of(hid_t type, const std::string& file, const std::string& object) {
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

hid_t link_create_props() {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

}  // namespace

H5File H5File::create(const std::string& path) {
  silence_hdf5_printing();
  // The 1.8 file format or later: its metadata (object headers with their attributes, group
  // indexes) carries checksums, so damage outside the datasets' bytes is detected on open
  // too, not only damage to tensor data (our crc32). HDF5 >= 1.8 and h5py read it.
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  HYDRA_H5_CHECK(id, path, "/", "create");
  return H5File(id, path);
}

H5File H5File::open_read(const std::string& path) {
  silence_hdf5_printing();
  if (access(path.c_str(), R_OK) != 0) HYDRA_FAIL(InputError, path << ": cannot open (missing or unreadable)");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  HYDRA_H5_CHECK(id, path, "/", "open (not an HDF5 file, or truncated)");
  return H5File(id, path);
}

H5File::H5File(H5File&& other) noexcept : id_(std::exchange(other.id_, -1)), path_(std::move(other.path_)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    close();
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
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
  HYDRA_H5_CHECK(rc, path_, "/", "close");
}

void H5File::flush() { HYDRA_H5_CHECK(H5Fflush(id_, H5F_SCOPE_GLOBAL), path_, "/", "flush"); }

void H5File::write_tensor(const std::string& object, const at::Tensor& tensor) {
  HYDRA_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), object << ": write a contiguous CPU tensor");
  Handle type(type_of(tensor.scalar_type()), H5Tclose);
  HYDRA_CHECK(type.id >= 0, object << ": unsupported dtype " << tensor.scalar_type());
  std::vector<hsize_t> dims(tensor.sizes().begin(), tensor.sizes().end());
  Handle space(tensor.dim() == 0 ? H5Screate(H5S_SCALAR)
                                 : H5Screate_simple(tensor.dim(), dims.data(), nullptr), H5Sclose);
  Handle lcpl(link_create_props(), H5Pclose);
  Handle dset(H5Dcreate2(id_, object.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  HYDRA_H5_CHECK(dset.id, path_, object, "create dataset");
  // Raw bits, memory type = file type: no conversion (bf16 included).
  if (tensor.numel() > 0) {
    HYDRA_H5_CHECK(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data_ptr()), path_, object, "write");
  }
  const size_t bytes = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  set_attr(object, "crc32", static_cast<int64_t>(crc32(tensor.data_ptr(), bytes)));
}

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

at::Tensor H5File::read_tensor(const std::string& object, bool verify_crc) const {
  const std::vector<int64_t> shape = dataset_shape(object);
  Handle dset(H5Dopen2(id_, object.c_str(), H5P_DEFAULT), H5Dclose);
  Handle type(H5Dget_type(dset), H5Tclose);
  const at::ScalarType dtype = dtype_of(type, path_, object);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (out.numel() > 0) {
    HYDRA_H5_CHECK(H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr()), path_, object, "read");
  }
  if (verify_crc && has_attr(object, "crc32")) {
    const size_t bytes = static_cast<size_t>(out.numel()) * out.element_size();
    const auto stored = static_cast<uint32_t>(attr_int(object, "crc32"));
    const uint32_t actual = crc32(out.data_ptr(), bytes);
    if (stored != actual) {
      HYDRA_FAIL(InputError, path_ << ": " << object << ": checksum mismatch (stored crc32 " << stored
                                   << ", data has " << actual << "): the file is corrupted");
    }
  }
  return out;
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
  HYDRA_H5_CHECK(obj.id, path, object, "open object");
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle attr(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  HYDRA_H5_CHECK(attr.id, path, object, "create attribute " + name);
  HYDRA_H5_CHECK(H5Awrite(attr, type, data), path, object, "write attribute " + name);
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
  write_attr(id_, path_, object, name, H5T_NATIVE_INT64, space, value.data());
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

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) HYDRA_FAIL(common::RuntimeFailure, path << ": cannot open for fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) HYDRA_FAIL(common::RuntimeFailure, path << ": fsync failed");
}

}  // namespace hydra::checkpoint
