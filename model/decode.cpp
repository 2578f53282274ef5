// Cached decoding: the model's forward (hydra_model.cpp) with causal routing, on new tokens
// only, each layer instance attending over its cache (docs/MODEL.md "Decoding with caches").
#include "model/decode.h"

#include <torch/torch.h>

#include "common/errors.h"
#include "model/hydra_model.h"
#include "model/routing.h"

namespace hydra::model {
namespace {

// The layer on the new tokens x [1, n, E]; a MoD layer on those its router chooses (the others
// pass unchanged and leave nothing in its cache).
torch::Tensor layer_step(LayerImpl& layer, const torch::Tensor& x, const torch::Tensor& positions,
                         AttentionCache& cache) {
  const RoutedFn run = [&](const torch::Tensor& xs, const torch::Tensor& ps) {
    return std::vector<torch::Tensor>{
        layer.sublayers(xs, [&](const torch::Tensor& in) { return layer.attn->decode(in, ps, cache); }), {}};
  };
  if (!layer.router) return run(x, positions)[0];
  const torch::Tensor logits = layer.router->forward(x).squeeze(-1);
  const Selection chosen = select_chosen(logits, {});
  if (chosen.selected_count == 0) return x;
  return apply_routed(x, positions, logits, chosen, run)[0];
}

// One pass through the block's layers with the caches of one recursion.
torch::Tensor pass_step(MacroBlockImpl& block, torch::Tensor h, const torch::Tensor& positions,
                        std::vector<AttentionCache>& caches) {
  for (size_t l = 0; l < block.layers.size(); ++l) h = layer_step(*block.layers[l], h, positions, caches[l]);
  return h;
}

// The block's recursions: recursion 1 on every new token, recursion r >= 2 on those its router
// chooses among the ones recursion r-1 ran, with that recursion's caches.
torch::Tensor block_step(MacroBlockImpl& block, const torch::Tensor& x, const torch::Tensor& positions,
                         BlockCache& cache) {
  torch::Tensor h = pass_step(block, x, positions, cache.recursions[0]);
  torch::Tensor active;  // [1, n] bool: still recursing (undefined: all)
  for (int r = 2; r <= block.recursions; ++r) {
    const torch::Tensor logits = block.mor_routers[r - 2]->forward(h).squeeze(-1);
    const Selection chosen = select_chosen(logits, active);
    if (chosen.selected_count == 0) break;  // every new token has exited
    std::vector<AttentionCache>& caches = cache.recursions[r - 1];
    h = apply_routed(h, positions, logits, chosen, [&](const torch::Tensor& xs, const torch::Tensor& ps) {
          return std::vector<torch::Tensor>{pass_step(block, xs, ps, caches), {}};
        })[0];
    active = chosen.member > 0.5;
  }
  return h;
}

// tokens [n] through the model at positions length .. length + n - 1, the caches grown; the
// logits after the last.
torch::Tensor run_tokens(HydraModelImpl& model, DecodeState& state, const torch::Tensor& tokens) {
  const int64_t n = tokens.size(0);
  const torch::Tensor positions =
      torch::arange(state.length(), state.length() + n, tokens.options().dtype(torch::kLong)).unsqueeze(0);
  torch::Tensor h = model.embed_tokens(tokens.unsqueeze(0));
  for (size_t b = 0; b < model.blocks.size(); ++b) h = block_step(*model.blocks[b], h, positions, state.blocks[b]);
  return model.lm_head(model.final_norm->forward(h.narrow(1, n - 1, 1))).view({-1});
}

}  // namespace

int64_t DecodeState::cache_bytes() const {
  int64_t total = 0;
  for (const BlockCache& block : blocks) {
    for (const auto& recursion : block.recursions) {
      for (const AttentionCache& cache : recursion) total += cached_bytes(cache);
    }
  }
  return total;
}

int64_t DecodeState::cache_entries() const {
  int64_t total = 0;
  for (const BlockCache& block : blocks) {
    for (const auto& recursion : block.recursions) {
      for (const AttentionCache& cache : recursion) total += cached_tokens(cache);
    }
  }
  return total;
}

Decoded prefill(HydraModelImpl& model, const torch::Tensor& tokens, int64_t max_length) {
  HYDRA_CHECK(model.slice.first_stage && model.slice.last_stage && !model.tp.active(),
              "decoding needs the whole model on one process");
  HYDRA_CHECK(tokens.dim() == 1 && tokens.size(0) >= 1 && tokens.size(0) <= max_length,
              "prefill takes 1 to " << max_length << " tokens, got shape " << tokens.sizes());
  torch::NoGradGuard no_grad;
  DecodeState state;
  state.model_ = &model;
  state.max_length_ = max_length;
  for (const auto& block : model.blocks) {
    BlockCache cache;
    cache.recursions.resize(block->recursions);
    for (auto& recursion : cache.recursions) {
      for (const Layer& layer : block->layers) recursion.push_back(layer->attn->empty_cache());
    }
    state.blocks.push_back(std::move(cache));
  }
  torch::Tensor logits = run_tokens(model, state, tokens.to(model.embed.device(), torch::kLong));
  state.length_ = tokens.size(0);
  return {std::move(state), logits};
}

torch::Tensor decode_step(HydraModelImpl& model, DecodeState& state, int64_t token) {
  HYDRA_CHECK(state.model_ == &model, "decode_step: the state was prefilled by another model");
  HYDRA_CHECK(!state.full(), "decode_step: the state holds its " << state.max_length_
                                                                  << " tokens already (prefill a shorter context)");
  torch::NoGradGuard no_grad;
  const torch::Tensor input = torch::tensor({token}, torch::dtype(torch::kLong).device(model.embed.device()));
  torch::Tensor logits = run_tokens(model, state, input);
  ++state.length_;
  return logits;
}

}  // namespace hydra::model
