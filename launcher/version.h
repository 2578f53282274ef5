// What `hydra --version` prints: the release, the git commit the build was configured from
// and the build flavour, so that a result can be traced to the code that produced it.
#pragma once

#include <string>

namespace hydra::launcher {

// "abc1234" or "abc1234-dirty" (uncommitted changes at configure time); "unknown" outside git.
// Defined in the generated build_info.cpp (launcher/CMakeLists.txt), the one file that
// changes with the commit.
const char* git_commit();

// "hydra 0.1.0 (commit abc1234, CPU build, LibTorch 1.13.0)".
std::string version_text();

}  // namespace hydra::launcher
