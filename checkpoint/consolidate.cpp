#include "checkpoint/consolidate.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "checkpoint/catalog.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/rank_files.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

// One parameter whole: its weight parts (tp slices, pipeline stages: whichever files hold
// them) placed by their offsets. Every element must come from some part.
at::Tensor assemble(const std::string& dir, const std::string& name, const std::vector<const CatalogEntry*>& parts,
                    RankFiles& files) {
  const std::vector<int64_t>& global = parts.front()->global_shape;
  const int64_t numel = element_count(global);
  const FlatPart whole{std::vector<int64_t>(global.size(), 0), global, 0, numel};
  std::unique_ptr<PartAssembler> assembler;  // made with the first part's dtype
  for (const CatalogEntry* e : parts) {
    if (e->global_shape != global) {
      HYDRA_FAIL(common::InputError, dir << "/" << rank_file_name(e->file) << ": /model/" << name << " has global shape "
                                         << shape_text(e->global_shape) << ", another part has " << shape_text(global));
    }
    const at::Tensor data = read_part(files, *e);
    if (!assembler) assembler = std::make_unique<PartAssembler>(whole, global, 1, data.scalar_type());
    assembler->add(e->part, {data});
  }
  if (assembler->missing() > 0) {
    HYDRA_FAIL(common::InputError, dir << ": the weights of " << name << " are incomplete ("
                                       << numel - assembler->missing() << " of " << numel
                                       << " elements found): a rank file is missing parts");
  }
  return assembler->result(0).view(global).contiguous();
}

}  // namespace

int consolidate_checkpoint(const std::string& dir, const std::string& output) {
  const LoadedCheckpoint index = read_index(dir);
  std::map<std::string, std::vector<const CatalogEntry*>> weights;  // sorted by name
  for (const auto& e : index.catalog) {
    if (!e.optim) weights[e.name].push_back(&e);
  }
  RankFiles files(dir, index.files);
  const std::string tmp = output + ".tmp";
  int count = 0;
  try {
    H5File out = H5File::create(tmp);
    out.set_attr("/", "format", std::string(kWeightsFormat));
    out.set_attr("/", "version", kWeightsVersion);
    out.set_attr("/", "step", index.progress.step);
    out.set_attr("/", "tokens", index.progress.tokens);
    out.set_attr("/", "config", index.config_json);
    out.set_attr("/", "source", dir);
    for (const auto& [name, parts] : weights) {
      out.write_tensor("/model/" + name, assemble(dir, name, parts, files));
      ++count;
    }
    out.close();
  } catch (...) {
    std::remove(tmp.c_str());  // no half-written output left behind
    throw;
  }
  fsync_path(tmp);
  std::filesystem::rename(tmp, output);
  return count;
}

}  // namespace hydra::checkpoint
