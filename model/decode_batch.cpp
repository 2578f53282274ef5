// Decoding B rows at once (decode_batch.h): the model's forward on one token a row, with
// routing by masks instead of by gathering the chosen tokens (decode.cpp), so that no shape
// depends on a router's decision.
#include "model/decode_batch.h"

#include <algorithm>

#include <torch/types.h>
#include <torch/utils.h>

#include "common/errors.h"
#include "model/hydra_model.h"

namespace hydra::model {
namespace {

// x + sigmoid(r) (y - x) on the rows of `chosen` [B], x on the others: apply_routed's update
// (routing.h) without moving tokens. x, y [1, B, E]; logits [1, B].
torch::Tensor routed_update(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& logits,
                            const torch::Tensor& chosen) {
  const torch::Tensor gate = torch::sigmoid(logits).unsqueeze(-1).to(x.scalar_type());
  return torch::where(chosen.view({1, -1, 1}), x + gate * (y - x), x);
}

// True when no row is chosen and the work can be skipped: on the CPU only, where reading the
// mask costs nothing and skipping is the saving MoD and MoR exist for (one row: every skipped
// token). On CUDA the step keeps its fixed work so that nothing waits for the device.
bool skip_unchosen(const torch::Tensor& chosen) { return !chosen.is_cuda() && !chosen.any().item<bool>(); }

// What one step needs besides the hidden states: the rows' positions [1, B] and the span read.
struct StepShape {
  const torch::Tensor& positions;
  int64_t span;
};

// The layer on one token a row; `write` [B]: the rows that run it (the active rows, or those a
// MoR router chose). A MoD layer also asks its router: a row it skips passes unchanged and
// leaves nothing in the cache.
torch::Tensor layer_rows(LayerImpl& layer, CacheRows& cache, const torch::Tensor& x, const torch::Tensor& write,
                         const StepShape& at) {
  const auto run = [&](const torch::Tensor& rows_that_write) {
    return layer.sublayers(x, [&](const torch::Tensor& in) {
      return layer.attn->decode_rows(in, at.positions, cache, rows_that_write, at.span);
    });
  };
  if (!layer.router) return run(write);
  const torch::Tensor logits = layer.router->forward(x).squeeze(-1);  // [1, B]
  const torch::Tensor chosen = write & (logits.select(0, 0) > 0);     // the causal threshold rule
  if (skip_unchosen(chosen)) return x;
  return routed_update(x, run(chosen), logits, chosen);
}

// One pass through the block's layers with one recursion's caches.
torch::Tensor pass_rows(MacroBlockImpl& block, std::vector<CacheRows>& caches, torch::Tensor h,
                        const torch::Tensor& write, const StepShape& at) {
  for (size_t l = 0; l < block.layers.size(); ++l) h = layer_rows(*block.layers[l], caches[l], h, write, at);
  return h;
}

// Recursion 1 on the active rows, recursion r >= 2 on the rows its router chooses among those
// recursion r-1 ran (a row that exits runs no later recursion).
torch::Tensor block_rows(MacroBlockImpl& block, std::vector<std::vector<CacheRows>>& caches, const torch::Tensor& x,
                         const torch::Tensor& active, const StepShape& at) {
  torch::Tensor h = pass_rows(block, caches[0], x, active, at);
  torch::Tensor running = active;
  for (int r = 2; r <= block.recursions; ++r) {
    const torch::Tensor logits = block.mor_routers[r - 2]->forward(h).squeeze(-1);
    running = running & (logits.select(0, 0) > 0);
    if (skip_unchosen(running)) break;  // every row has exited
    h = routed_update(h, pass_rows(block, caches[r - 1], h, running, at), logits, running);
  }
  return h;
}

}  // namespace

DecodeBatch::DecodeBatch(HydraModelImpl& model, int64_t rows, int64_t max_length)
    : model_(&model), max_length_(max_length), lengths_(static_cast<size_t>(rows), 0) {
  check_decodable(model);
  HYDRA_CHECK(rows >= 1 && max_length >= 1, "DecodeBatch: " << rows << " rows of " << max_length << " tokens");
  const auto options = torch::dtype(torch::kLong).device(model.embed.device());
  positions_ = torch::zeros({1, rows}, options);
  ids_ = torch::zeros({1, rows}, options);
  write_ = torch::zeros({rows}, options.dtype(torch::kBool));
  for (const auto& block : model.blocks) {
    std::vector<std::vector<CacheRows>> recursions(static_cast<size_t>(block->recursions));
    for (auto& recursion : recursions) {
      for (const Layer& layer : block->layers) {
        // One slot more than a row can hold: an inactive full row still writes (put_rows), there.
        recursion.push_back(CacheRows{layer->attn->empty_cache(), torch::zeros({rows}, options), max_length + 1});
      }
    }
    caches_.push_back(std::move(recursions));
  }
}

void DecodeBatch::load(int64_t row, const DecodeState& state) {
  HYDRA_CHECK(row >= 0 && row < rows(), "DecodeBatch::load: row " << row << " of " << rows());
  HYDRA_CHECK(state.model_ == model_, "DecodeBatch::load: a state prefilled by another model");
  HYDRA_CHECK(state.length() <= max_length_,
              "DecodeBatch::load: a state of " << state.length() << " tokens into rows of " << max_length_);
  for (size_t b = 0; b < caches_.size(); ++b) {
    for (size_t r = 0; r < caches_[b].size(); ++r) {
      for (size_t l = 0; l < caches_[b][r].size(); ++l) load_row(caches_[b][r][l], row, state.blocks[b].recursions[r][l]);
    }
  }
  lengths_[static_cast<size_t>(row)] = state.length();
  positions_.select(1, row).fill_(state.length());
}

torch::Tensor DecodeBatch::step(const std::vector<int64_t>& tokens, const std::vector<bool>& active) {
  return run(prepare(tokens, active));
}

int64_t DecodeBatch::prepare(const std::vector<int64_t>& tokens, const std::vector<bool>& active) {
  const int64_t B = rows();
  HYDRA_CHECK(static_cast<int64_t>(tokens.size()) == B && (active.empty() || static_cast<int64_t>(active.size()) == B),
              "DecodeBatch::step: " << tokens.size() << " tokens and " << active.size() << " flags for " << B << " rows");
  std::vector<int64_t> runs(static_cast<size_t>(B), 1);
  int64_t longest = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!active.empty() && !active[i]) {
      runs[i] = 0;
      continue;
    }
    HYDRA_CHECK(lengths_[i] > 0, "DecodeBatch::step: row " << i << " holds no sequence (load a prefill first)");
    HYDRA_CHECK(lengths_[i] < max_length_, "DecodeBatch::step: row " << i << " holds its " << max_length_
                                                                       << " tokens already (prefill a shorter context)");
    longest = std::max(longest, lengths_[i] + 1);
  }
  ids_.copy_(torch::tensor(tokens, torch::kLong).view({1, B}));
  write_.copy_(torch::tensor(runs, torch::kLong) > 0);
  for (size_t i = 0; i < runs.size(); ++i) lengths_[i] += runs[i];
  const int64_t span = (longest + kSpanStep - 1) / kSpanStep * kSpanStep;
  return std::max<int64_t>(1, std::min(max_length_, span));
}

torch::Tensor DecodeBatch::run(int64_t span) {
  torch::NoGradGuard no_grad;
  const StepShape at{positions_, span};
  torch::Tensor h = model_->embed_tokens(ids_);
  for (size_t b = 0; b < caches_.size(); ++b) h = block_rows(*model_->blocks[b], caches_[b], h, write_, at);
  positions_.add_(write_.to(torch::kLong).view({1, -1}));
  return next_token_logits(*model_, h).view({rows(), -1});
}

int64_t DecodeBatch::sum_over_caches(int64_t (*of)(const CacheRows&)) const {
  int64_t total = 0;
  for (const auto& block : caches_) {
    for (const auto& recursion : block) {
      for (const CacheRows& cache : recursion) total += of(cache);
    }
  }
  return total;
}

int64_t DecodeBatch::cache_entries() const { return sum_over_caches(rows_tokens); }
int64_t DecodeBatch::cache_bytes() const { return sum_over_caches(rows_bytes); }
int64_t DecodeBatch::allocated_bytes() const { return sum_over_caches(rows_allocated_bytes); }

}  // namespace hydra::model
