// Where each parameter of a model (or of one pipeline stage) sits in the whole model: recorded
// once, by the module that creates the parameter, from the sharding spec it is built from
// (projection.h's LayerSharding; the embedding and head by the model). The model keeps the
// record (HydraModelImpl::placements); checkpoints read each tensor's ShardInfo from it, the
// optimizer's flat layout its tensor-parallel split and the tied copy. Nothing here parses a
// parameter's name: names are only keys.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "model/projection.h"
#include "model/shard_info.h"
#include "model/tp_hooks.h"

namespace hydra::model {

struct ParamPlacement {
  ShardInfo shard;  // split dimension, global shape and offset, vocabulary padding, who stores it
  // The last pipeline stage's copy of the tied embedding, kept equal to the first stage's
  // (their gradients are summed); the first stage's is the one stored (shard.primary false).
  bool tied_copy = false;
  // Whether this rank holds a tensor-parallel slice (false: the whole tensor, the same on
  // every tp rank; always false without tensor parallelism).
  bool tp_split() const { return shard.split_dim >= 0; }
};

// Every parameter's placement, by its full name ("blocks.0.layers.1.attn.wq.weight").
struct Placements {
  std::map<std::string, ParamPlacement> by_name;
};

// The placement of parameter `name`; a bug if none was recorded.
const ParamPlacement& placement_of(const Placements& placements, const std::string& name);

// Records `tensor` as parameter `name`: with tensor parallelism active and split_dim >= 0, this
// rank's equal slice of it along split_dim (tp rank r holds slice r); otherwise held whole,
// stored by tp rank 0. A name recorded twice is a bug.
void record_placement(Placements& placements, const std::string& name, const at::Tensor& tensor,
                      const TensorParallelHooks& tp, int split_dim = -1);

// Records a parameter of vocabulary rows (embed.weight, head.weight): split along dim 0 under
// tensor parallelism, rows from `vocab_size` on padding; `tied_copy`: the last pipeline
// stage's copy of the tied embedding (ParamPlacement::tied_copy).
void record_vocab_rows(Placements& placements, const std::string& name, const at::Tensor& tensor,
                       const TensorParallelHooks& tp, int64_t vocab_size, bool tied_copy = false);

// Records every parameter of a layer module, under `prefix` + "." + its name in the module, as
// `sharding` (the spec the module was built from) says: column-parallel projections and
// sharded parameters split along dim 0, row-parallel weights along dim 1, the rest whole.
// Spec entries without a parameter (CCQA's convolutions switched off) are skipped; a parameter
// without a spec entry is a bug.
void record_layer(Placements& placements, const std::string& prefix, const torch::nn::Module& layer,
                  const LayerSharding& sharding, const TensorParallelHooks& tp);

// Records every parameter of `module` under `prefix` + "." + its name, held whole.
void record_whole(Placements& placements, const std::string& prefix, const torch::nn::Module& module,
                  const TensorParallelHooks& tp);

// Adds every record of `from` to `into` (a name in both is a bug).
void merge_placements(Placements& into, const Placements& from);

// A bug unless every parameter of `module` has a placement and every placement a parameter.
void check_every_parameter_placed(const torch::nn::Module& module, const Placements& placements);

}  // namespace hydra::model
