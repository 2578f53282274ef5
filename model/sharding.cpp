#include "model/sharding.h"

#include "common/errors.h"

namespace hydra::model {
namespace {

// The dimension a projection's parameter splits along: its output features (dim 0 of the
// weight, the bias) for kColumn, its input features (dim 1 of the weight) for kRow.
int projection_split_dim(ShardRole role, bool weight) {
  if (role == ShardRole::kReplicated) return -1;
  return weight && role == ShardRole::kRow ? 1 : 0;
}

}  // namespace

const ParamPlacement& placement_of(const Placements& placements, const std::string& name) {
  const auto it = placements.by_name.find(name);
  HYDRA_CHECK(it != placements.by_name.end(), "no placement recorded for parameter " << name);
  return it->second;
}

void record_placement(Placements& placements, const std::string& name, const at::Tensor& tensor,
                      const TensorParallelHooks& tp, int split_dim) {
  ParamPlacement p;
  ShardInfo& s = p.shard;
  s.global_shape.assign(tensor.sizes().begin(), tensor.sizes().end());
  s.offset.assign(tensor.dim(), 0);
  if (tp.active() && split_dim >= 0) {
    HYDRA_CHECK(split_dim < tensor.dim(), name << ": split along dim " << split_dim << " of " << tensor.dim());
    // Equal slices: the offset is the local size times the rank.
    s.split_dim = split_dim;
    s.global_shape[split_dim] *= tp.size;
    s.offset[split_dim] = tensor.size(split_dim) * tp.rank;
  } else {
    s.primary = !tp.active() || tp.rank == 0;  // replicas: tp rank 0 stores them
  }
  const bool added = placements.by_name.emplace(name, std::move(p)).second;
  HYDRA_CHECK(added, "placement of parameter " << name << " recorded twice");
}

void record_vocab_rows(Placements& placements, const std::string& name, const at::Tensor& tensor,
                       const TensorParallelHooks& tp, int64_t vocab_size, bool tied_copy) {
  record_placement(placements, name, tensor, tp, 0);
  ParamPlacement& p = placements.by_name.at(name);
  p.shard.valid_rows = vocab_size;
  p.tied_copy = tied_copy;
  if (tied_copy) p.shard.primary = false;
}

void record_layer(Placements& placements, const std::string& prefix, const torch::nn::Module& layer,
                  const LayerSharding& sharding, const TensorParallelHooks& tp) {
  const auto params = layer.named_parameters();
  const auto record = [&](const std::string& name, int split_dim) {
    if (const at::Tensor* t = params.find(name)) record_placement(placements, prefix + "." + name, *t, tp, split_dim);
  };
  for (const auto& spec : sharding.projections) {
    record(spec.name + ".weight", projection_split_dim(spec.role, true));
    record(spec.name + ".bias", projection_split_dim(spec.role, false));
  }
  for (const auto& p : sharding.params) record(p.name, p.sharded ? 0 : -1);
  for (const auto& item : params) {
    HYDRA_CHECK(placements.by_name.count(prefix + "." + item.key()) == 1,
                prefix << "." << item.key() << " has no entry in its layer's sharding spec");
  }
}

void record_whole(Placements& placements, const std::string& prefix, const torch::nn::Module& module,
                  const TensorParallelHooks& tp) {
  for (const auto& item : module.named_parameters()) record_placement(placements, prefix + "." + item.key(), item.value(), tp);
}

void merge_placements(Placements& into, const Placements& from) {
  for (const auto& item : from.by_name) {
    const bool added = into.by_name.insert(item).second;
    HYDRA_CHECK(added, "placement of parameter " << item.first << " recorded twice");
  }
}

void check_every_parameter_placed(const torch::nn::Module& module, const Placements& placements) {
  const auto params = module.named_parameters();
  for (const auto& item : params) placement_of(placements, item.key());
  HYDRA_CHECK(params.size() == placements.by_name.size(),
              placements.by_name.size() << " placements recorded for " << params.size() << " parameters");
}

}  // namespace hydra::model
