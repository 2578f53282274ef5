// Reading the stored parts of a committed checkpoint (checkpoint/catalog.h) from its rank
// files, for loading into a layout (load.cpp) and for consolidating (consolidate.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "checkpoint/catalog.h"
#include "checkpoint/file_checksum.h"
#include "checkpoint/h5_file.h"

namespace hydra::checkpoint {

// The rank files of one checkpoint, opened on first use. A file whose size differs from the
// index's (`checksums`, LoadedCheckpoint::files) is refused before it is read.
class RankFiles {
 public:
  RankFiles(std::string dir, const std::map<std::string, FileChecksum>& checksums)
      : dir_(std::move(dir)), checksums_(checksums) {}
  const H5File& get(int rank);
  // Dataset bytes read from all of them so far.
  int64_t bytes_read() const;

 private:
  std::string dir_;
  const std::map<std::string, FileChecksum>& checksums_;
  std::map<int, H5File> files_;
};

// The HDF5 object of a part: /model/<name>, or /optim/<group>/<name> (group master, exp_avg
// or exp_avg_sq) for optimizer state.
std::string object_of(const CatalogEntry& e, const std::string& group = "master");

// Reads one stored part (verifying its checksum) and checks it against its catalog line.
at::Tensor read_part(RankFiles& files, const CatalogEntry& e, const std::string& group = "master");
// Reads the elements [sub.begin, sub.end) of a stored part (sub: e.part narrowed, as
// PartAssembler::needed returns it), verifying the checksum blocks the read covers.
at::Tensor read_part(RankFiles& files, const CatalogEntry& e, const FlatPart& sub, const std::string& group = "master");

}  // namespace hydra::checkpoint
