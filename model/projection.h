// Every linear layer of the model is created here, through one ProjectionFactory, from a
// ProjectionSpec that says how it may be sharded. The default factory makes a plain
// y = x W^T (no bias, docs/MODEL.md); the parallelism code passes a factory that returns
// column- or row-parallel versions instead, and the attention math never changes: it reads
// head counts off the projected tensors, never off the config.
//
// Each layer type also publishes its sharding spec (LayerSharding): the specs of its
// projections plus the rule for each parameter that is not a projection (norm weights,
// convolutions, temperatures). The modules build themselves from that same spec, so the two
// cannot drift apart.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

namespace hydra::model {

// How a tensor-parallel group splits a projection W (out x in).
enum class ShardRole {
  kColumn,      // split the output features (W's rows) into tp slices; no communication
  kRow,         // split the input features; the partial outputs are summed (all-reduce)
  kReplicated,  // every rank holds the whole matrix
};

const char* to_string(ShardRole role);

struct ProjectionSpec {
  std::string name;          // module name inside its layer, e.g. "wq"
  int64_t in = 0;
  int64_t out = 0;
  ShardRole role = ShardRole::kReplicated;
  // Shards must not split this many consecutive features (a head's channels): the output
  // features for kColumn, the input features for kRow.
  int64_t granularity = 1;
  double init_std = 0.02;    // weight ~ N(0, init_std)
  bool bias = false;         // only routers have one (docs/MODEL.md)
  double bias_init = 0.0;
  // Rows of W drawn from N(0, init_std), the rest start at 0 (0: all). The LM head sets the
  // vocabulary padded for tp = 1, so that the draws, and every later parameter's init, are
  // the same whatever padding tensor parallelism adds.
  int64_t init_rows = 0;
};

// The interface a projection module offers to the model: a forward and its parameters
// (named "weight" and, with a bias, "bias").
struct ProjectionImpl : torch::nn::Module {
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // W when forward(x) is exactly x W^T: no bias, nothing communicated. Undefined otherwise.
  // project_same_input (same_input_projections.h) uses it to fuse the backward.
  virtual torch::Tensor plain_weight() { return {}; }
};
using Projection = std::shared_ptr<ProjectionImpl>;
using ProjectionFactory = std::function<Projection(const ProjectionSpec&)>;

// y = x W^T (+ b), W initialised N(0, spec.init_std), b to spec.bias_init.
struct LinearProjection : ProjectionImpl {
  explicit LinearProjection(const ProjectionSpec& spec);
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor plain_weight() override { return bias.defined() ? torch::Tensor() : weight; }
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without spec.bias
};

ProjectionFactory default_projection_factory();

// The full [out, in] weight of a spec as one process initialises it (from the global RNG).
// Tensor-parallel projections call it on every rank and keep their slice, so the union of the
// slices is the single-process matrix.
torch::Tensor init_projection_weight(const ProjectionSpec& spec);

// A parameter that is not a projection, and how tensor parallelism treats it.
struct ParamSharding {
  std::string name;          // inside its layer, e.g. "attn.out_norm.weight"
  bool sharded = false;      // false: replicated (its gradient is the same on every rank)
  int64_t granularity = 1;   // sharded along dim 0 in units of this many entries
  std::string note;
};

struct LayerSharding {
  std::vector<ProjectionSpec> projections;  // names relative to the layer ("attn.wq")
  std::vector<ParamSharding> params;
};

// Finds the spec called `name` (a bug if absent) and builds it with `factory`.
Projection make_projection(const std::vector<ProjectionSpec>& specs, const std::string& name,
                           const ProjectionFactory& factory);

}  // namespace hydra::model
