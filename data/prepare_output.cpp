#include "data/prepare_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/errors.h"
#include "common/remove_tree.h"
#include "data/manifest.h"

namespace hydra::data {
namespace {

namespace fs = std::filesystem;
using common::ConfigError;

// The resolved absolute path of an existing path, "" when it does not exist.
std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The finished output replaces the directory by rename, which cannot cross filesystems.
bool is_mount_point(const std::string& dir) {
  struct stat self {}, parent {};
  return ::stat(dir.c_str(), &self) == 0 && ::stat((dir + "/..").c_str(), &parent) == 0 && self.st_dev != parent.st_dev;
}

// "a, b, c, d, e and 3 more": enough for the user to recognise the directory.
std::string a_few(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::ostringstream out;
  const size_t shown = std::min<size_t>(names.size(), 5);
  for (size_t i = 0; i < shown; ++i) out << (i ? ", " : "") << names[i];
  if (names.size() > shown) out << " and " << names.size() - shown << " more";
  return out.str();
}

std::vector<std::string> entries_of(const OutputPlan& plan) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(plan.target, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) HYDRA_FAIL(ConfigError, "--output " << plan.output << ": cannot list the directory: " << ec.message());
  return names;
}

// An input inside the output would be replaced together with it.
void refuse_inputs_inside(const OutputPlan& plan, const std::vector<std::string>& inputs) {
  for (const std::string& input : inputs) {
    const std::string resolved = real_path(input);
    if (resolved.empty()) continue;  // list_input_files reports it
    if (resolved == plan.target || resolved.rfind(plan.target + "/", 0) == 0) {
      HYDRA_FAIL(ConfigError, "--output " << plan.output << ": " << (resolved == plan.target ? "is" : "holds")
                                          << " the input " << input << "; write the tokens to a new directory");
    }
  }
}

// The entries of a non-empty output directory when it is an earlier prepare's output;
// anything else is refused, because replacing it could lose what the user put there.
std::vector<std::string> earlier_output_files(const OutputPlan& plan, const std::vector<std::string>& entries) {
  if (std::find(entries.begin(), entries.end(), kManifestName) == entries.end()) {
    HYDRA_FAIL(ConfigError, "--output " << plan.output << ": not empty and not written by `hydra data prepare` (holds "
                                        << a_few(entries) << "); give a new or empty directory");
  }
  Manifest manifest;
  try {
    manifest = read_manifest(plan.target);
  } catch (const common::InputError& e) {
    HYDRA_FAIL(ConfigError, "--output " << plan.output << ": not empty, and its " << kManifestName
                                        << " is not one `hydra data prepare` wrote (" << e.what()
                                        << "); give a new or empty directory");
  }
  std::set<std::string> ours = {kManifestName};
  for (const auto& s : manifest.train) ours.insert(s.file);
  for (const auto& s : manifest.val) ours.insert(s.file);
  std::vector<std::string> foreign;
  for (const auto& e : entries) {
    if (!ours.count(e)) foreign.push_back(e);
  }
  if (!foreign.empty()) {
    HYDRA_FAIL(ConfigError, "--output " << plan.output << ": holds files its " << kManifestName << " does not list ("
                                        << a_few(foreign) << "); `hydra data prepare` replaces only its own earlier "
                                        << "output: move them away or give a new or empty directory");
  }
  return entries;
}

// The ancestors of a new output that do not exist yet, outermost first; one that exists
// but is not a directory (an output under a file) is refused.
std::vector<std::string> missing_parents_of(const OutputPlan& plan) {
  std::vector<std::string> missing;
  fs::path p = fs::path(plan.target).parent_path();
  struct stat st {};
  while (::stat(p.c_str(), &st) != 0 && p != p.root_path()) {
    missing.insert(missing.begin(), p.string());
    p = p.parent_path();
  }
  if (!S_ISDIR(st.st_mode)) {
    HYDRA_FAIL(ConfigError, "--output " << plan.output << ": " << p.string() << " is a file, not a directory");
  }
  return missing;
}

std::string absolute_normal(const std::string& path) {
  std::string out = fs::absolute(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

}  // namespace

OutputPlan check_output(const std::string& output, const std::vector<std::string>& inputs) {
  OutputPlan plan;
  plan.output = output;
  const std::string resolved = real_path(output);
  struct stat st {};
  if (resolved.empty() && ::lstat(output.c_str(), &st) == 0) {
    HYDRA_FAIL(ConfigError, "--output " << output << ": a symbolic link to nothing");
  }
  plan.target = resolved.empty() ? absolute_normal(output) : resolved;
  refuse_inputs_inside(plan, inputs);
  if (resolved.empty()) {
    plan.missing_parents = missing_parents_of(plan);
    return plan;
  }
  if (!is_directory(resolved)) HYDRA_FAIL(ConfigError, "--output " << output << ": is a file, not a directory");
  if (is_mount_point(resolved)) {
    HYDRA_FAIL(ConfigError, "--output " << output << ": a mount point, which the finished output cannot replace "
                                        << "by a rename; give a directory inside it");
  }
  plan.exists = true;
  const std::vector<std::string> entries = entries_of(plan);
  if (!entries.empty()) plan.previous_files = earlier_output_files(plan, entries);
  return plan;
}

OutputStaging::OutputStaging(OutputPlan plan) : plan_(std::move(plan)) {
  const fs::path target(plan_.target);
  staging_ = (target.parent_path() / ("." + target.filename().string() + ".prepare-" +
                                      std::to_string(::getpid()) + ".tmp")).string();
  for (const std::string& dir : plan_.missing_parents) {
    if (::mkdir(dir.c_str(), 0777) != 0) {
      const int err = errno;
      remove_created_parents();
      HYDRA_FAIL(ConfigError, "--output " << plan_.output << ": cannot create " << dir << ": " << std::strerror(err));
    }
    created_parents_.push_back(dir);
  }
  if (::mkdir(staging_.c_str(), 0777) != 0) {
    const int err = errno;
    remove_created_parents();
    HYDRA_FAIL(ConfigError, "--output " << plan_.output << ": cannot create a directory beside it (" << staging_
                                        << "): " << std::strerror(err));
  }
}

OutputStaging::~OutputStaging() {
  if (published_) return;
  try {
    common::remove_tree(staging_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hydra: warning: could not remove %s: %s\n", staging_.c_str(), e.what());
  }
  remove_created_parents();
}

void OutputStaging::remove_created_parents() {
  for (auto it = created_parents_.rbegin(); it != created_parents_.rend(); ++it) ::rmdir(it->c_str());
  created_parents_.clear();
}

void OutputStaging::publish() {
  const char* target = plan_.target.c_str();
  struct stat st {};
  if (plan_.exists && ::stat(target, &st) == 0) ::chmod(staging_.c_str(), st.st_mode & 07777);  // keep its mode
  if (plan_.previous_files.empty()) {
    // A new path, or an empty directory, which rename replaces.
    if (std::rename(staging_.c_str(), target) != 0) {
      HYDRA_FAIL(common::RuntimeFailure, "--output " << plan_.output << ": cannot move " << staging_
                                                     << " into place: " << std::strerror(errno));
    }
    published_ = true;
    return;
  }
  swap_with_earlier();
  published_ = true;
  // staging_ now holds the earlier output: remove exactly the files it consisted of.
  for (const std::string& name : plan_.previous_files) ::unlink((staging_ + "/" + name).c_str());
  if (::rmdir(staging_.c_str()) != 0) {
    std::fprintf(stderr, "hydra: warning: left %s (the earlier output; something else appeared in it)\n",
                 staging_.c_str());
  }
}

void OutputStaging::swap_with_earlier() {
  const char* target = plan_.target.c_str();
  // One atomic exchange: readers see the earlier output or the new one, never a mix.
  if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, target, RENAME_EXCHANGE) == 0) return;
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
    HYDRA_FAIL(common::RuntimeFailure, "--output " << plan_.output << ": cannot exchange it with " << staging_
                                                   << ": " << std::strerror(errno));
  }
  // Filesystems without the exchange (NFS, Lustre): two renames, the output briefly absent.
  const std::string earlier = staging_ + ".old";
  if (std::rename(target, earlier.c_str()) != 0) {
    HYDRA_FAIL(common::RuntimeFailure, "--output " << plan_.output << ": cannot move it aside to " << earlier
                                                   << ": " << std::strerror(errno));
  }
  if (std::rename(staging_.c_str(), target) != 0) {
    const int err = errno;
    std::rename(earlier.c_str(), target);  // put the earlier output back
    HYDRA_FAIL(common::RuntimeFailure, "--output " << plan_.output << ": cannot move " << staging_
                                                   << " into place: " << std::strerror(err));
  }
  std::rename(earlier.c_str(), staging_.c_str());
}

}  // namespace hydra::data
