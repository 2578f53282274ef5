// The catalog of a checkpoint: one line per stored tensor part (which rank file, weight or
// optimizer state, parameter name, its FlatPart, the parameter's stored global shape). Each
// rank file holds the lines of its own datasets as `/catalog`; at commit rank 0 joins them
// into index.h5's `/catalog` (read_index, checkpoint.h), so that a loading rank knows which files and datasets overlap
// what it needs without opening the others (docs/CHECKPOINT.md "Catalog").
#pragma once

#include <string>
#include <vector>

#include "checkpoint/regions.h"

namespace hydra::checkpoint {

class H5File;

struct CatalogEntry {
  int file = 0;        // the rank whose file holds the part
  bool optim = false;  // /optim/{master,exp_avg,exp_avg_sq}/<name> (else /model/<name>)
  std::string name;    // the parameter
  FlatPart part;
  std::vector<int64_t> global_shape;  // the whole parameter as stored (no vocabulary padding)
};

// Tab-separated lines: file, model|optim, name, origin, shape, begin, end, global_shape
// (lists comma-separated).
std::string format_catalog(const std::vector<CatalogEntry>& entries);
// `where` names the file in errors (InputError).
std::vector<CatalogEntry> parse_catalog(const std::string& text, const std::string& where);

// The text as a uint8 dataset `/catalog` (checksummed like every dataset), and back.
void write_catalog(H5File& file, const std::string& text);
std::string read_catalog(const H5File& file);

}  // namespace hydra::checkpoint
