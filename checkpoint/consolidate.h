// `hydra ckpt consolidate DIR --output FILE`: one HDF5 file with every parameter whole, for
// fine-tuning and for other tools (h5py reads it; docs/CHECKPOINT.md "Consolidated weights").
#pragma once

#include <cstdint>
#include <string>

namespace hydra::checkpoint {

// The root attributes `format` and `version` of the file (docs/CHECKPOINT.md), written here
// and checked by its reader (weights_file.h).
inline constexpr const char* kWeightsFormat = "hydra-weights";
inline constexpr int64_t kWeightsVersion = 1;

// Writes FILE (through a temporary and a rename). Returns the number of parameters (tensors).
// Each parameter is assembled from its parts by their global offsets, whatever tp, pp or dp
// layout wrote them; vocabulary padding is not stored, so embed/head hold model.vocab_size
// rows. InputError naming the file or dataset for a checkpoint that is incomplete or damaged.
int consolidate_checkpoint(const std::string& dir, const std::string& output);

}  // namespace hydra::checkpoint
