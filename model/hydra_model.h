// The HYDRA model (docs/MODEL.md "Macro-block and model"): embedding, macro-blocks of layers with
// Mixture-of-Depths routers on some layers and Mixture-of-Recursions routers per macro-block,
// final RMSNorm, LM head over a padded vocabulary, next-token cross entropy.
//
// Parameter names (docs/MODEL.md lists them with shapes):
//   embed.weight, blocks.<b>.layers.<l>.{attn_norm,mlp_norm}.weight,
//   blocks.<b>.layers.<l>.attn.<projection>.weight, blocks.<b>.layers.<l>.mlp.w_{gate,up,down}.weight,
//   blocks.<b>.layers.<l>.router.{weight,bias} (MoD), blocks.<b>.mor_routers.<i>.{weight,bias}
//   (MoR, i = 0 routes recursion 2), final_norm.weight, head.weight (untied only).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "model/attention.h"
#include "model/config.h"
#include "model/dims.h"
#include "model/layers.h"
#include "model/projection.h"
#include "model/recompute.h"
#include "model/routing.h"
#include "model/sharding.h"
#include "model/model_slice.h"
#include "model/stage_layers.h"
#include "model/tp_hooks.h"

namespace hydra::model {

// How a forward pass routes and what it runs: shared by the layers of one forward.
struct RunContext {
  RouteMode route = RouteMode::kTopK;
  RoutingLog* log = nullptr;  // null: record nothing (and always null during a recompute)
  bool router_entropy = false;  // with log: also each router's entropy (RoutingStat::entropy_sum)
};

// h = x + alpha Attn(RMSNorm(x)); y = h + MLP(RMSNorm(h)). With a MoD router, only the routed
// tokens run it: x + sigmoid(r) (y - x) for them, x for the others.
struct LayerImpl : torch::nn::Module {
  LayerImpl(const ModelConfig& config, const std::string& type, bool mod_routed, double aux_scale,
            const ProjectionFactory& factory, std::string name, const TensorParallelHooks& tp = {},
            bool recompute_mlp = false);
  // The layer on every token it is given: y.
  torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& positions);
  // y = h + MLP(RMSNorm(h)), h = x + alpha attention(RMSNorm(x)): the layer around a given
  // attention of the normalised input (dense: attn->forward; decoding: attn->decode).
  torch::Tensor sublayers(const torch::Tensor& x, const std::function<torch::Tensor(const torch::Tensor&)>& attention);
  // {y, weighted aux loss (a scalar, zero without a router)}.
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& positions, const RunContext& run);

  std::string type, name;
  double alpha;
  double capacity;    // MoD capacity
  double aux_scale;   // mod.aux_weight / number of MoD router applications in a forward
  RMSNorm attn_norm, mlp_norm;
  Attention attn;
  Mlp mlp;
  Projection router;  // MoD router (E -> 1, with bias), or null
  TensorParallelHooks tp;  // the attention and MLP inputs enter the tp region
  bool recompute_mlp = false;  // train.activation_checkpointing: mlp (model/recompute.h)
  Placements placements;   // of its parameters, under their full names (model/sharding.h)
};
using Layer = std::shared_ptr<LayerImpl>;

// One macro-block: its layers (shared weights), run R times with MoR routing between runs.
// A pipeline stage may hold only layers [first, end) of it (positions within the block; only
// with MoR off): every layer is still built, so that each parameter draws the same random
// numbers as in the whole model, and only the held ones are kept.
struct MacroBlockImpl : torch::nn::Module {
  MacroBlockImpl(const ModelConfig& config, int index, Checkpointing checkpointing, const ProjectionFactory& factory,
                 const TensorParallelHooks& tp = {}, int first = 0, int end = -1);
  // One pass through the layers: {y, aux}. Layer checkpointing happens here.
  std::vector<torch::Tensor> run_layers(const torch::Tensor& x, const torch::Tensor& positions, const RunContext& run);
  // The R recursions: {y, aux}. Block checkpointing wraps each pass.
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& positions, const RunContext& run);

  int recursions;
  double mor_aux_scale;  // mor.aux_weight / number of MoR router applications in a forward
  Checkpointing checkpointing;
  std::string name;
  std::vector<Layer> layers;            // the held layers, in order
  std::vector<Projection> mor_routers;  // mor_routers[i] routes recursion i + 2
  // Holders that give the parameters their names: layers.<position>, mor_routers.<i>.
  std::shared_ptr<torch::nn::Module> layer_holder;
  torch::nn::ModuleList router_list{nullptr};
  Placements placements;  // of the held layers' parameters and the MoR routers'
};
using MacroBlock = std::shared_ptr<MacroBlockImpl>;

// Built once per run.
struct ModelOptions {
  std::string activation_checkpointing = "none";  // none|layer|block (train.activation_checkpointing)
  int tp = 1;                                      // the vocabulary pads to a multiple of 128 * tp
  ProjectionFactory projection_factory = default_projection_factory();
  // Tensor parallelism (tp > 1): parallel::make_tp_hooks and parallel::make_tp_projection_factory
  // of the same group; tp_hooks.size must equal tp (or be 1: the whole model, padded for tp).
  TensorParallelHooks tp_hooks;
  // Pipeline parallelism: the layers this stage holds (parallel/pipeline_plan.h chooses them).
  // The first stage also holds the embedding, the last the final norm and the head (and, with
  // tied embeddings, its own copy of embed.weight, kept equal to the first stage's by the
  // trainer). Parameters keep the names they have in the whole model.
  StageLayers stage;
};

struct ForwardOptions {
  // false: training routing (top-k per sequence, aux losses). true: causal threshold routing
  // (sigmoid(r) > 0.5), for evaluation and inference; aux_loss is then 0.
  bool causal_routing = false;
  bool return_logits = true;
  bool router_entropy = false;  // ModelOutput::routing carries each router's entropy (diagnostics)
};

struct ModelOutput {
  torch::Tensor hidden;   // [B, S, E]: a pipeline stage's output, on every stage but the last
  torch::Tensor logits;   // [B, S, V_padded / tp] (this rank's vocabulary slice), padded columns -inf
  torch::Tensor lm_loss;  // mean next-token cross entropy (when targets are given)
  torch::Tensor aux_loss; // weighted router losses (0-dim; zero without routers)
  RoutingLog routing;     // one entry per router application
  // What the optimizer minimises: lm_loss + aux_loss.
  torch::Tensor loss() const { return lm_loss + aux_loss; }
};

struct HydraModelImpl : torch::nn::Module {
  explicit HydraModelImpl(const ModelConfig& config, const ModelOptions& options = {});
  // input: on the first stage (and in a whole model) the tokens [B, S] int64 in
  // [0, vocab_size); on a later stage the previous stage's hidden state [B, S, E].
  // targets [B, S] int64 (the next tokens; -100 is ignored) or undefined for logits only;
  // read on the last stage. A stage before the last returns `hidden` and its aux loss.
  ModelOutput forward(const torch::Tensor& input, const torch::Tensor& targets = {},
                      const ForwardOptions& options = {});
  // The first stage's embedding of tokens [B, S] int64: [B, S, E] (summed over tp).
  torch::Tensor embed_tokens(const torch::Tensor& tokens);
  // The last stage's LM head on the final norm's output h [..., E]: logits [..., V_padded / tp],
  // padded columns -inf.
  torch::Tensor lm_head(const torch::Tensor& h);

  ModelConfig config;
  Dims dims;
  ModelSlice slice;  // this rank's layers and vocabulary rows of the whole model
  TensorParallelHooks tp;
  Checkpointing checkpointing;
  torch::Tensor embed;  // embed.weight (first stage, and the last when tied); else undefined
  std::vector<MacroBlock> blocks;  // the held (parts of) macro-blocks, in order
  std::shared_ptr<torch::nn::Module> block_holder;  // names them blocks.<index>
  RMSNorm final_norm;   // null before the last stage
  Projection head;      // null when tied (the head is embed.weight) or before the last stage
  // Where each parameter sits in the whole model (model/sharding.h), recorded as it was built:
  // for checkpoints, the gradient norm and the tied copy. embed/head split their vocabulary
  // rows (rows from config.vocab_size on are padding).
  Placements placements;
};
using HydraModel = std::shared_ptr<HydraModelImpl>;

// Every layer's groups of same-input projections packed for decoding (pack_same_input_weights,
// model/same_input_projections.h): for a model that no longer trains, after its last
// Module::to. Returns how many groups were packed (none under tensor parallelism, whose
// projections are not plain).
int pack_same_input_weights(HydraModelImpl& model);

// The sharding spec of one layer of a type (names relative to the layer, e.g. "attn.wq"),
// routers included when mod_routed.
LayerSharding layer_sharding(const std::string& type, const ModelConfig& config, bool mod_routed, int tp = 1);

// logit(p), p clamped to [1e-3, 1 - 1e-3]: the router bias that makes sigmoid(r) start at p.
double router_bias(double p);

}  // namespace hydra::model
