// Cached decoding: the model's forward (hydra_model.cpp) with causal routing, on new tokens
// only, each layer instance attending over its cache (docs/MODEL.md "Decoding with caches").
#include "model/decode.h"

#include <torch/types.h>
#include <torch/utils.h>

#include "common/errors.h"
#include "model/hydra_model.h"
#include "model/routing.h"

namespace hydra::model {
namespace {

// Which layer instance: macro-block, recursion (1-based), pattern position.
struct Instance {
  size_t block;
  int recursion;
  size_t layer;
};

AttentionCache& cache_of(DecodeState& state, const Instance& at) {
  return state.blocks[at.block].recursions[static_cast<size_t>(at.recursion) - 1][at.layer];
}

// The layer on the new tokens x [1, T, E]; a MoD layer on those its router chooses (the others
// pass unchanged and leave nothing in its cache).
torch::Tensor layer_step(LayerImpl& layer, const Instance& at, const torch::Tensor& x, const torch::Tensor& positions,
                         DecodeState& state) {
  AttentionCache& cache = cache_of(state, at);
  const auto run = [&](const torch::Tensor& xs, const torch::Tensor& ps) {
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
torch::Tensor pass_step(MacroBlockImpl& block, size_t b, int recursion, torch::Tensor h, const torch::Tensor& positions,
                        DecodeState& state) {
  for (size_t l = 0; l < block.layers.size(); ++l) {
    h = layer_step(*block.layers[l], {b, recursion, l}, h, positions, state);
  }
  return h;
}

// The block's recursions: recursion 1 on every new token, recursion r >= 2 on those its router
// chooses among the ones recursion r-1 ran, with that recursion's caches.
torch::Tensor block_step(MacroBlockImpl& block, size_t b, const torch::Tensor& x, const torch::Tensor& positions,
                         DecodeState& state) {
  torch::Tensor h = pass_step(block, b, 1, x, positions, state);
  torch::Tensor active;  // [1, T] bool: still recursing (undefined: all)
  for (int r = 2; r <= block.recursions; ++r) {
    const torch::Tensor logits = block.mor_routers[r - 2]->forward(h).squeeze(-1);
    const Selection chosen = select_chosen(logits, active);
    if (chosen.selected_count == 0) break;  // every new token has exited
    h = apply_routed(h, positions, logits, chosen, [&](const torch::Tensor& xs, const torch::Tensor& ps) {
          return std::vector<torch::Tensor>{pass_step(block, b, r, xs, ps, state), {}};
        })[0];
    active = chosen.member > 0.5;
  }
  return h;
}

// The tokens [1, T] at positions [1, T] through the model, the caches grown; the final hidden
// states [1, T, E] before the final norm.
torch::Tensor run_tokens(HydraModelImpl& model, const torch::Tensor& ids, const torch::Tensor& positions,
                         DecodeState& state) {
  torch::Tensor h = model.embed_tokens(ids);
  for (size_t b = 0; b < model.blocks.size(); ++b) h = block_step(*model.blocks[b], b, h, positions, state);
  return h;
}

}  // namespace

// The logits [1, T, V_padded] after the final hidden states h [1, T, E]. Under tp the head gives
// this rank's vocabulary columns; placed among zeros and summed over the group they are the whole
// row on every rank (exactly: each column is one rank's value plus zeros), which sampling needs.
torch::Tensor next_token_logits(HydraModelImpl& model, const torch::Tensor& h) {
  const torch::Tensor local = model.lm_head(model.tp.enter_region(model.final_norm->forward(h)));
  if (!model.tp.active()) return local;
  const ModelSlice& slice = model.slice;
  torch::Tensor whole = torch::zeros({h.size(0), h.size(1), slice.vocab_padded}, local.options());
  whole.narrow(-1, slice.vocab_begin, slice.vocab_local).copy_(local);
  return model.tp.reduce(whole);
}

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

void check_decodable(const HydraModelImpl& model) {
  HYDRA_CHECK(model.slice.first_stage && model.slice.last_stage,
              "decoding needs every layer of the model on this process: pipeline parallelism cannot decode "
              "(tensor parallelism can)");
}

Decoded prefill(HydraModelImpl& model, const torch::Tensor& tokens, int64_t max_length) {
  check_decodable(model);
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
  const int64_t n = tokens.size(0);
  const torch::Tensor ids = tokens.to(model.embed.device(), torch::kLong).unsqueeze(0);
  const torch::Tensor positions = torch::arange(n, ids.options()).unsqueeze(0);
  const torch::Tensor h = run_tokens(model, ids, positions, state);
  state.length_ = n;
  const torch::Tensor logits = next_token_logits(model, h.narrow(1, n - 1, 1)).view({-1});
  return {std::move(state), logits};
}

torch::Tensor decode_step(HydraModelImpl& model, DecodeState& state, int64_t token) {
  HYDRA_CHECK(state.model_ == &model, "decode_step: a state prefilled by another model");
  HYDRA_CHECK(!state.full(), "decode_step: a state holds its " << state.max_length_
                                                               << " tokens already (prefill a shorter context)");
  torch::NoGradGuard no_grad;
  const auto options = torch::dtype(torch::kLong).device(model.embed.device());
  const torch::Tensor h = run_tokens(model, torch::full({1, 1}, token, options), torch::full({1, 1}, state.length_, options),
                                     state);
  ++state.length_;
  return next_token_logits(model, h).view({-1});
}

}  // namespace hydra::model
