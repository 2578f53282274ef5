#include "common/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/errors.h"

namespace hydra::common {
namespace {

// nftw keeps no user pointer: the first failure goes here (one tree at a time per thread).
thread_local std::string failed_entry;
thread_local int failed_errno = 0;

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  if (std::remove(path) == 0 || errno == ENOENT) return 0;
  failed_entry = path;
  failed_errno = errno;
  return 1;  // stop the walk
}

}  // namespace

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return;
  failed_entry.clear();
  failed_errno = 0;
  // FTW_DEPTH: children before their directory; FTW_PHYS: links are entries, not followed.
  const int rc = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) {
    const std::string entry = failed_entry.empty() ? path : failed_entry;
    const int err = failed_errno != 0 ? failed_errno : errno;
    HYDRA_FAIL(RuntimeFailure, "cannot remove " << entry << ": " << std::strerror(err));
  }
}

}  // namespace hydra::common
