#include "model/hydra_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "common/errors.h"
#include "model/fused_ops.h"
#include "model/linear_cross_entropy.h"
#include "model/model_checks.h"
#include "model/model_info.h"
#include "model/model_slice.h"
#include "model/same_input_projections.h"

namespace hydra::model {
namespace {

// Router spec: the one linear layer with a bias (docs/MODEL.md "Init"); replicated.
ProjectionSpec router_spec(const std::string& name, const Dims& m, double capacity) {
  ProjectionSpec s{name, m.E, 1, ShardRole::kReplicated, 1, m.init_std};
  s.bias = true;
  s.bias_init = router_bias(capacity);
  return s;
}

torch::Tensor zero_aux(const torch::Tensor& like) { return torch::zeros({}, like.options()); }

}  // namespace

double router_bias(double p) {
  // capacity 1 would need an infinite bias; 1 - 1e-3 gives sigmoid 0.999, which is "near".
  const double q = std::min(std::max(p, 1e-3), 1.0 - 1e-3);
  return std::log(q / (1.0 - q));
}

LayerSharding layer_sharding(const std::string& type, const ModelConfig& config, bool mod_routed, int tp) {
  const Dims m = model_dims(config);
  LayerSharding out;
  const LayerSharding attn = attention_sharding(type, config, tp);
  for (auto spec : attn.projections) {
    spec.name = "attn." + spec.name;
    out.projections.push_back(spec);
  }
  for (auto spec : MlpImpl::sharding(m).projections) {
    spec.name = "mlp." + spec.name;
    out.projections.push_back(spec);
  }
  if (mod_routed) out.projections.push_back(router_spec("router", m, config.mod.capacity));
  out.params.push_back({"attn_norm.weight", false, 1, "pre-attention RMSNorm"});
  out.params.push_back({"mlp_norm.weight", false, 1, "pre-MLP RMSNorm"});
  for (auto p : attn.params) {
    p.name = "attn." + p.name;
    out.params.push_back(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Layer
LayerImpl::LayerImpl(const ModelConfig& c, const std::string& type_, bool mod_routed, double aux_scale_,
                     const ProjectionFactory& factory, std::string name_, const TensorParallelHooks& tp_,
                     bool recompute_mlp_)
    : type(type_), name(std::move(name_)), alpha(residual_scale(type_, c)), capacity(c.mod.capacity),
      aux_scale(aux_scale_), tp(tp_), recompute_mlp(recompute_mlp_) {
  const Dims m = model_dims(c);
  attn_norm = register_module("attn_norm", std::make_shared<RMSNormImpl>(m.E, c.norm_eps));
  attn = register_module("attn", make_attention(type, c, factory, tp));
  mlp_norm = register_module("mlp_norm", std::make_shared<RMSNormImpl>(m.E, c.norm_eps));
  mlp = register_module("mlp", std::make_shared<MlpImpl>(m, factory));
  if (mod_routed) router = register_module("router", factory(router_spec("router", m, c.mod.capacity)));
  record_layer(placements, name, *this, layer_sharding(type, c, mod_routed, tp.size), tp);
}

torch::Tensor LayerImpl::dense(const torch::Tensor& x, const torch::Tensor& positions) {
  return sublayers(x, [&](const torch::Tensor& in) { return attn->forward(in, positions); });
}

torch::Tensor LayerImpl::sublayers(const torch::Tensor& x,
                                   const std::function<torch::Tensor(const torch::Tensor&)>& attention) {
  // Each sub-layer is one tp region: it enters at the normalised input and leaves through its
  // row-parallel output projection (tp_hooks.h).
  // x feeds the residual and attn_norm: one node, so that its two gradients add in the norm's
  // backward kernel. h = x + alpha * attn(...) and mlp_norm(h) in one node (one kernel on CUDA).
  const auto [residual, attn_in] = fused_rms_norm_with_input(x, attn_norm->weight, attn_norm->eps);
  const auto [h, normed] = fused_add_rms_norm(residual, attention(tp.enter_region(attn_in)), alpha,
                                              mlp_norm->weight, mlp_norm->eps);
  const torch::Tensor mlp_in = tp.enter_region(normed);
  if (!recompute_mlp) return h + mlp->forward(mlp_in);
  // Only the MLP's input is kept; backward runs the MLP again (its matmuls and SwiGLU).
  Mlp self = mlp;
  return h + checkpointed(mlp_in, [self](const torch::Tensor& in, bool) { return std::vector<torch::Tensor>{self->forward(in)}; },
                          *mlp)[0];
}

std::vector<torch::Tensor> LayerImpl::forward(const torch::Tensor& x, const torch::Tensor& positions,
                                              const RunContext& run) {
  if (!router) return {dense(x, positions), zero_aux(x)};
  // Mixture-of-Depths: score on the layer input, run the layer on the chosen tokens only.
  const torch::Tensor logits = router->forward(x).squeeze(-1);  // [B, S]
  const int64_t S = x.size(1);
  const Selection sel = select_tokens(logits, {}, mod_capacity_tokens(capacity, S), run.route);
  if (run.log) {
    run.log->push_back({name + ".router", sel.selected_count, x.size(0) * S});
    if (run.router_entropy) run.log->back().entropy_sum = router_entropy_sum(logits, {});
  }
  auto routed = apply_routed(x, positions, logits, sel, [this](const torch::Tensor& xs, const torch::Tensor& ps) {
    return std::vector<torch::Tensor>{dense(xs, ps), torch::Tensor()};
  });
  const torch::Tensor aux =
      run.route == RouteMode::kTopK ? aux_scale * router_aux_loss(logits, sel, {}) : zero_aux(x);
  return {routed[0], aux};
}

// ---------------------------------------------------------------------------------------------
// Macro-block
MacroBlockImpl::MacroBlockImpl(const ModelConfig& c, int index, Checkpointing checkpointing_,
                               const ProjectionFactory& factory, const TensorParallelHooks& tp, int first, int end)
    : recursions(c.mor.recursions), checkpointing(checkpointing_), name("blocks." + std::to_string(index)) {
  const Dims m = model_dims(c);
  const int n_layers = static_cast<int>(c.pattern.size());
  int mod_layers = 0;
  for (int l = 0; l < n_layers; ++l) mod_layers += is_mod_layer(c, l) ? 1 : 0;
  // Auxiliary weights are means over router applications, so that mod.aux_weight and
  // mor.aux_weight mean the same at every depth.
  const double mod_applications = static_cast<double>(mod_layers) * c.macro_blocks * c.mor.recursions;
  const double mor_applications = static_cast<double>(c.mor.recursions - 1) * c.macro_blocks;
  const double mod_scale = mod_applications > 0 ? c.mod.aux_weight / mod_applications : 0.0;
  mor_aux_scale = mor_applications > 0 ? c.mor.aux_weight / mor_applications : 0.0;

  if (end < 0) end = n_layers;
  HYDRA_CHECK(0 <= first && first <= end && end <= n_layers, name << ": layers [" << first << ", " << end << ")");
  HYDRA_CHECK(recursions == 1 || (first == 0 && end == n_layers),
              name << ": with MoR recursions a pipeline stage holds whole macro-blocks");
  layer_holder = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int l = 0; l < n_layers; ++l) {
    auto layer = std::make_shared<LayerImpl>(c, c.pattern[l], is_mod_layer(c, l), mod_scale, factory,
                                             name + ".layers." + std::to_string(l), tp,
                                             checkpointing == Checkpointing::kMlp);
    if (l < first || l >= end) continue;  // built for its random draws only
    layer_holder->register_module(std::to_string(l), layer);
    layers.push_back(layer);
    merge_placements(placements, layer->placements);
  }
  router_list = register_module("mor_routers", torch::nn::ModuleList());
  for (int r = 2; r <= recursions; ++r) {
    // Recursion r keeps (R - r + 1) / R of the sequence: that is the gate it starts near.
    const double capacity = static_cast<double>(recursions - r + 1) / recursions;
    auto router = factory(router_spec("router", m, capacity));
    router_list->push_back(router);
    mor_routers.push_back(router);
    record_whole(placements, name + ".mor_routers." + std::to_string(r - 2), *router, tp);
  }
}

std::vector<torch::Tensor> MacroBlockImpl::run_layers(const torch::Tensor& x, const torch::Tensor& positions,
                                                      const RunContext& run) {
  torch::Tensor h = x, aux = zero_aux(x);
  for (const Layer& layer : layers) {
    std::vector<torch::Tensor> out;
    if (checkpointing == Checkpointing::kLayer) {
      out = checkpointed(h, [layer, positions, run](const torch::Tensor& in, bool first) {
        RunContext inner = run;
        if (!first) inner.log = nullptr;
        return layer->forward(in, positions, inner);
      }, *layer);
    } else {
      out = layer->forward(h, positions, run);
    }
    h = out[0];
    aux = aux + out[1];
  }
  return {h, aux};
}

std::vector<torch::Tensor> MacroBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& positions,
                                                   const RunContext& run) {
  // One pass through the shared layers, checkpointed as a whole in block mode.
  auto pass = [this, run](const torch::Tensor& in, const torch::Tensor& pos) {
    if (checkpointing != Checkpointing::kBlock) return run_layers(in, pos, run);
    // The recompute closure lives in the autograd graph: hold the block by shared pointer.
    auto self = std::static_pointer_cast<MacroBlockImpl>(shared_from_this());
    return checkpointed(in, [self, pos, run](const torch::Tensor& xin, bool first) {
      RunContext inner = run;
      if (!first) inner.log = nullptr;
      return self->run_layers(xin, pos, inner);
    }, *self);
  };
  // Recursion 1 takes every token.
  std::vector<torch::Tensor> out = pass(x, positions);
  torch::Tensor h = out[0], aux = out[1];
  const int64_t B = x.size(0), S = x.size(1);
  torch::Tensor active;  // [B, S] bool: tokens still recursing (undefined: all)
  // How many: the tokens the previous recursion selected (counted on the host, without reading
  // the device in top-k mode, so that a training step can be captured in a CUDA graph).
  int64_t candidates = B * S;
  for (int r = 2; r <= recursions; ++r) {
    const Projection& router = mor_routers[r - 2];
    const torch::Tensor logits = router->forward(h).squeeze(-1);
    const Selection sel = select_tokens(logits, active, mor_capacity_tokens(S, r, recursions), run.route);
    if (run.log) {
      run.log->push_back({name + ".mor_routers." + std::to_string(r - 2), sel.selected_count, candidates});
      if (run.router_entropy) run.log->back().entropy_sum = router_entropy_sum(logits, active);
    }
    candidates = sel.selected_count;
    auto routed = apply_routed(h, positions, logits, sel, pass);
    if (run.route == RouteMode::kTopK) aux = aux + mor_aux_scale * router_aux_loss(logits, sel, active);
    aux = aux + routed[1];
    h = routed[0];
    active = sel.member > 0.5;
  }
  return {h, aux};
}

// ---------------------------------------------------------------------------------------------
// Model
HydraModelImpl::HydraModelImpl(const ModelConfig& c, const ModelOptions& options)
    : config(c), dims(model_dims(c)), checkpointing(parse_checkpointing(options.activation_checkpointing)),
      tp(options.tp_hooks) {
  check_model_config(c);
  check_tensor_parallel(c, tp.size);
  // options.tp pads the vocabulary; the hooks shard the model. Without hooks the model is
  // whole (a single process padded as for tp ranks, e.g. to read its checkpoints).
  HYDRA_CHECK(tp.size == 1 || tp.size == options.tp,
              "ModelOptions: tp " << options.tp << " but tp_hooks.size " << tp.size);
  slice = make_model_slice(c, options.stage, tp.size, tp.rank, options.tp);
  const int64_t vocab_local = slice.vocab_local, vocab_begin = slice.vocab_begin;
  const bool first_stage = slice.first_stage, last_stage = slice.last_stage;
  // Every stage builds every parameter up to its last layer, in the whole model's order, and
  // keeps its own, so that each parameter draws the same random numbers at any layout.
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor drawn = torch::empty({slice.vocab_drawn, dims.E}).normal_(0.0, dims.init_std);
    if (first_stage || (last_stage && c.tie_embeddings)) {
      torch::Tensor rows = torch::zeros({vocab_local, dims.E});
      if (slice.vocab_rows_kept() > 0) {
        rows.narrow(0, 0, slice.vocab_rows_kept()).copy_(drawn.narrow(0, vocab_begin, slice.vocab_rows_kept()));
      }
      auto table = register_module("embed", std::make_shared<torch::nn::Module>());
      embed = table->register_parameter("weight", rows);
      // A later stage's embedding is the tied copy of the first stage's.
      record_vocab_rows(placements, "embed.weight", embed, tp, c.vocab_size, !first_stage);
    }
  }
  const int per_block = static_cast<int>(c.pattern.size());
  block_holder = register_module("blocks", std::make_shared<torch::nn::Module>());
  for (int b = 0; b < c.macro_blocks && b * per_block < slice.end_layer; ++b) {
    const int first = slice.block_first(b, per_block), end = slice.block_end(b, per_block);
    if (first >= end) {  // an earlier stage's block: built for its random draws only
      MacroBlockImpl(c, b, checkpointing, options.projection_factory, tp);
      continue;
    }
    auto block = std::make_shared<MacroBlockImpl>(c, b, checkpointing, options.projection_factory, tp, first, end);
    block_holder->register_module(std::to_string(b), block);
    blocks.push_back(block);
    merge_placements(placements, block->placements);
  }
  if (last_stage) {
    final_norm = register_module("final_norm", std::make_shared<RMSNormImpl>(dims.E, c.norm_eps));
    record_whole(placements, "final_norm", *final_norm, tp);
  }
  if (last_stage && !c.tie_embeddings) {
    // Column-parallel over the vocabulary (the padded size divides by tp).
    ProjectionSpec spec{"head", dims.E, slice.vocab_padded, ShardRole::kColumn, 128, dims.init_std};
    spec.init_rows = slice.vocab_drawn;
    head = register_module("head", options.projection_factory(spec));
    record_vocab_rows(placements, "head.weight", head->named_parameters()["weight"], tp, c.vocab_size);
  }
  check_every_parameter_placed(*this, placements);
}

ModelOutput HydraModelImpl::forward(const torch::Tensor& input, const torch::Tensor& targets,
                                    const ForwardOptions& options) {
  ModelOutput result;
  const int64_t vocab_local = slice.vocab_local, vocab_begin = slice.vocab_begin;
  const int64_t B = input.size(0), S = input.size(1);
  RunContext run;
  run.route = options.causal_routing ? RouteMode::kThreshold : RouteMode::kTopK;
  run.log = &result.routing;
  run.router_entropy = options.router_entropy;
  const torch::Tensor positions =
      torch::arange(S, input.options().dtype(torch::kLong)).unsqueeze(0).expand({B, S});
  // On the first stage the tokens, else the previous stage's hidden state.
  torch::Tensor h = slice.first_stage ? embed_tokens(input) : input;
  torch::Tensor aux = zero_aux(h);
  for (const MacroBlock& block : blocks) {
    auto out = block->forward(h, positions, run);
    h = out[0];
    aux = aux + out[1];
  }
  result.aux_loss = aux;
  if (!slice.last_stage) {
    result.hidden = h;
    return result;
  }
  // The LM head is column-parallel over the vocabulary: its input enters the tp region.
  h = tp.enter_region(final_norm->forward(h));
  // Training and evaluation ask for the loss alone: the head and the cross entropy run chunk
  // by chunk (linear_cross_entropy.h), never holding the whole batch's logits; under tp each
  // rank over its slice of the vocabulary. Callers that want the logits take the path below.
  if (targets.defined() && !options.return_logits) {
    const torch::Tensor weight = head ? head->named_parameters()["weight"] : embed;
    const int64_t vocab_valid = std::clamp<int64_t>(config.vocab_size - vocab_begin, 0, vocab_local);
    const VocabShard shard{vocab_begin, tp.max_over_group, tp.sum_over_group};
    result.lm_loss = linear_cross_entropy(h.reshape({B * S, h.size(-1)}), weight, targets.reshape({B * S}), vocab_valid,
                                          /*chunk_rows=*/0, tp.active() ? &shard : nullptr);
    return result;
  }
  const torch::Tensor logits = lm_head(h);
  if (targets.defined() && tp.active()) {
    result.lm_loss = tp.cross_entropy(logits, targets, vocab_begin);
  } else if (targets.defined()) {
    const auto type = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
    const torch::Tensor logp = torch::log_softmax(logits.to(type).view({B * S, slice.vocab_padded}), -1);
    result.lm_loss = torch::nll_loss(logp, targets.reshape({B * S}), /*weight=*/{}, at::Reduction::Mean,
                                     /*ignore_index=*/-100);
  }
  if (options.return_logits) result.logits = logits;
  return result;
}

torch::Tensor HydraModelImpl::embed_tokens(const torch::Tensor& tokens) {
  if (!tp.active()) return torch::embedding(embed, tokens);
  // Vocab-parallel lookup: rows of other ranks read as zero; the sum over tp is the embedding.
  const int64_t vocab_local = slice.vocab_local, vocab_begin = slice.vocab_begin;
  const torch::Tensor mine = (tokens >= vocab_begin) & (tokens < vocab_begin + vocab_local);
  const torch::Tensor local_ids = (tokens - vocab_begin) * mine;
  return tp.reduce(torch::embedding(embed, local_ids) * mine.unsqueeze(-1).to(embed.scalar_type()));
}

torch::Tensor HydraModelImpl::lm_head(const torch::Tensor& h) {
  const int64_t vocab_local = slice.vocab_local, vocab_begin = slice.vocab_begin;
  torch::Tensor logits = head ? head->forward(h) : torch::linear(h, embed);
  if (vocab_begin + vocab_local > config.vocab_size) {
    // Padded vocabulary entries never get probability: -inf before the softmax.
    torch::Tensor pad = torch::zeros({vocab_local}, logits.options());
    const int64_t first_pad = std::max<int64_t>(0, config.vocab_size - vocab_begin);
    pad.narrow(0, first_pad, vocab_local - first_pad).fill_(-std::numeric_limits<double>::infinity());
    logits = logits + pad;
  }
  return logits;
}

int pack_same_input_weights(HydraModelImpl& model) {
  int packed = 0;
  for (const MacroBlock& block : model.blocks) {
    for (const Layer& layer : block->layers) {
      std::vector<std::vector<ProjectionImpl*>> groups = layer->attn->same_input_groups();
      groups.push_back(layer->mlp->same_input_group());
      for (const auto& group : groups) packed += pack_same_input_weights(group) ? 1 : 0;
    }
  }
  return packed;
}

}  // namespace hydra::model
