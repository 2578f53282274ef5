// Deleting a directory tree (`rm -rf`), for checkpoints that are replaced or pruned.
//
// Why not std::filesystem::remove_all: the CUDA build also loads PyTorch's libtorch.so, which
// carries and exports its own copy of libstdc++'s filesystem code from an older toolchain.
// Our calls to remove_all bind to that copy, and it jumps to a null pointer (seen on the GPU
// machine: SIGSEGV at pc 0, called from libtorch.so, right after "removing old checkpoint").
// POSIX nftw has no such dependency and does the same.
#pragma once

#include <string>

namespace hydra::common {

// Removes `path` and everything under it; symbolic links are removed, never followed. A
// missing path is not an error. Throws RuntimeFailure naming the entry that could not be
// removed.
void remove_tree(const std::string& path);

}  // namespace hydra::common
