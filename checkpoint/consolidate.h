// `hydra ckpt consolidate DIR --output FILE`: one HDF5 file with every parameter whole, for
// fine-tuning and for other tools (h5py reads it; docs/CHECKPOINT.md "Consolidated weights").
#pragma once

#include <string>

namespace hydra::checkpoint {

// Writes FILE (through a temporary and a rename). Returns the number of parameters (tensors).
// InputError naming the file or dataset for a checkpoint that is incomplete, damaged, or
// saved with tensor parallelism (its slices cannot be joined yet).
int consolidate_checkpoint(const std::string& dir, const std::string& output);

}  // namespace hydra::checkpoint
