// Internals shared by the H5File sources (h5_file.cpp: files, writing, attributes;
// h5_read.cpp: reading datasets whole or in part). Not for use outside checkpoint/h5_*.cpp.
#pragma once

#include <c10/core/ScalarType.h>
#include <hdf5.h>

#include <string>

#include "common/errors.h"

namespace hydra::checkpoint::h5_detail {

// HDF5's error stack as one line (and cleared), for the exceptions below.
std::string hdf5_error_text();

// Throws `ErrorType` "<file>: <object>: <what> failed: <HDF5 stack>" when `rc` < 0.
#define HYDRA_H5_CHECK_AS(ErrorType, rc, file, object, what)                                \
  do {                                                                                      \
    if ((rc) < 0) {                                                                         \
      HYDRA_FAIL(ErrorType, file << ": " << object << ": " << what << " failed: "           \
                                 << ::hydra::checkpoint::h5_detail::hdf5_error_text());     \
    }                                                                                       \
  } while (0)
// Reading: a failure means a missing, truncated or damaged file (InputError, exit 3).
#define HYDRA_H5_CHECK(rc, file, object, what) HYDRA_H5_CHECK_AS(::hydra::common::InputError, rc, file, object, what)
// Writing: a failure is the machine's (a full disk, a lost mount), not the input's
// (RuntimeFailure, exit 4); HDF5's stack carries the OS's reason ("No space left on device").
#define HYDRA_H5_WRITE_CHECK(rc, file, object, what) \
  HYDRA_H5_CHECK_AS(::hydra::common::RuntimeFailure, rc, file, object, what)

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

// The file/memory type of a tensor dtype (a new handle the caller closes; -1 if unsupported).
hid_t type_of(at::ScalarType dtype);
// The tensor dtype of a stored type; InputError naming file and object if unsupported.
at::ScalarType dtype_of(hid_t type, const std::string& file, const std::string& object);

}  // namespace hydra::checkpoint::h5_detail
