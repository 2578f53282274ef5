#include "checkpoint/weights_file.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <filesystem>

#include "checkpoint/consolidate.h"
#include "checkpoint/h5_file.h"
#include "checkpoint/regions.h"
#include "common/errors.h"

namespace hydra::checkpoint {
namespace {

using common::InputError;

// The values of one parameter's part (`shard`, this rank's tensor `param`) from the whole
// dataset /model/<name> of a consolidated file: the rows that meet the part are read (and
// their checksum blocks verified), placed by the part's offset.
void load_from_file(const H5File& file, const std::string& name, const at::Tensor& param, const model::ShardInfo& shard) {
  const std::string object = "/model/" + name;
  if (!file.exists(object)) {
    HYDRA_FAIL(InputError, file.path() << ": " << object
                                       << " is missing (the weights of another model, or of a pipeline stage?)");
  }
  const std::vector<int64_t> global = stored_global_shape(shard);
  const std::vector<int64_t> stored = file.dataset_shape(object);
  if (stored != global) {
    HYDRA_FAIL(InputError, file.path() << ": " << object << " has shape " << shape_text(stored) << ", the model expects "
                                       << shape_text(global) << " (weights of another model shape)");
  }
  const FlatPart target{shard.offset, shape_of(param), 0, param.numel()};
  const FlatPart whole{std::vector<int64_t>(global.size(), 0), global, 0, element_count(global)};
  PartAssembler assembler(target, global, 1, param.scalar_type());
  const FlatPart sub = assembler.needed(whole);
  if (sub.end > sub.begin) assembler.add(sub, {file.read_range(object, sub.begin, sub.end)});
  HYDRA_CHECK(assembler.missing() == 0, file.path() << ": " << object << " did not cover this rank's part");
  param.detach().copy_(assembler.result(0).view(param.sizes()));
}

// The consolidated file at `path`, opened and its format and version checked.
H5File open_weights_file(const std::string& path) {
  H5File file = H5File::open_read(path);
  const std::string format = file.has_attr("/", "format") ? file.attr_string("/", "format") : "";
  if (format != kWeightsFormat) {
    HYDRA_FAIL(InputError, path << ": not a consolidated weights file (format '" << format
                                << "', expected 'hydra-weights': `hydra ckpt consolidate DIR --output FILE` writes one; "
                                   "a checkpoint is its step_N directory)");
  }
  if (file.attr_int("/", "version") != kWeightsVersion) {
    HYDRA_FAIL(InputError, path << ": weights file version " << file.attr_int("/", "version") << ", this build reads "
                                << kWeightsVersion);
  }
  return file;
}

LoadedCheckpoint load_file(const std::string& path, const parallel::NamedParams& params,
                           const std::vector<model::ShardInfo>& placements) {
  const H5File file = open_weights_file(path);
  LoadedCheckpoint out;
  out.dir = path;
  out.progress.step = file.attr_int("/", "step");
  out.progress.tokens = file.attr_int("/", "tokens");
  out.config_json = file.attr_string("/", "config");
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, param] = params[i];
    load_from_file(file, name, param, placements.empty() ? whole(param) : placements[i]);
  }
  out.bytes_read = file.bytes_read();
  return out;
}

}  // namespace

bool is_weights_file(const std::string& path) { return std::filesystem::is_regular_file(path); }

std::string stored_config(const std::string& path) {
  if (!is_weights_file(path)) return read_index(path).config_json;
  const H5File file = open_weights_file(path);
  return file.has_attr("/", "config") ? file.attr_string("/", "config") : "";
}

LoadedCheckpoint load_weights(const std::string& path, const parallel::NamedParams& params,
                              const std::vector<model::ShardInfo>& placements) {
  HYDRA_CHECK(placements.empty() || placements.size() == params.size(),
              "load_weights: " << placements.size() << " placements for " << params.size() << " parameters");
  if (is_weights_file(path)) return load_file(path, params, placements);
  return load_checkpoint(path, params, parallel::make_flat_layout(params), nullptr, placements);
}

}  // namespace hydra::checkpoint
