// Cached decoding of one sequence (docs/MODEL.md "Decoding with caches"): prefill runs the
// model over a prompt once and keeps, in every layer instance, what later tokens read of it
// (model/kv_cache.h); decode_step then runs one new token through the model against those
// caches. Both return the logits of the next token, the same numbers (to rounding) as the full
// forward with causal routing (ForwardOptions::causal_routing) over all the tokens so far.
//
// Routing is the causal threshold rule, decided per new token: a MoD layer whose router skips a
// token leaves no entry in that layer's cache; MoR keeps one cache per recursion, holding the
// tokens that reached that recursion (a token that exits leaves nothing in the later ones).
//
// A DecodeState is one sequence; model/decode_batch.h decodes several at once (its rows are
// loaded from prefills). The whole model (no pipeline stage), no autograd. Under tensor
// parallelism every rank of the group makes the same calls with the same tokens: each holds the
// caches of its own heads (attention.h) and runs the forward's collectives, and each gets the
// whole logits row. The caller owns the states; copying a DecodeState forks the sequence
// (nothing is ever written in place).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "model/kv_cache.h"

namespace hydra::model {

struct HydraModelImpl;

// The caches of one macro-block: recursions[r - 1][l] is the layer at pattern position l in
// recursion r (1-based), holding the tokens that reached it there.
struct BlockCache {
  std::vector<std::vector<AttentionCache>> recursions;
};

struct Decoded;

// Every layer instance's cache after the tokens so far. Only prefill makes one, so a state
// always has its prompt; decode_step refuses a state of another model, or a full one.
class DecodeState {
 public:
  int64_t length() const { return length_; }          // tokens so far: the next token's position
  int64_t max_length() const { return max_length_; }  // the most tokens it may hold
  bool full() const { return length_ >= max_length_; }
  // Bytes of the per-token cache tensors (not CCQA's fixed convolution state), and entries
  // (tokens summed over the layer instances); under MoD/MoR fewer than length x layers.
  int64_t cache_bytes() const;
  int64_t cache_entries() const;

  std::vector<BlockCache> blocks;  // per held macro-block, in order (read by tests and reports)

 private:
  DecodeState() = default;
  friend Decoded prefill(HydraModelImpl& model, const torch::Tensor& tokens, int64_t max_length);
  friend torch::Tensor decode_step(HydraModelImpl& model, DecodeState& state, int64_t token);
  friend class DecodeBatch;
  const HydraModelImpl* model_ = nullptr;
  int64_t length_ = 0;
  int64_t max_length_ = 0;
};

struct Decoded {
  DecodeState state;
  torch::Tensor logits;  // [V_padded]: the next token's, padded columns -inf
};

// The state after tokens (1-D int64, 1 .. max_length of them; one pass over all of them) and the
// logits that follow. max_length: the context the model was trained for (train.seq_len).
Decoded prefill(HydraModelImpl& model, const torch::Tensor& tokens, int64_t max_length);

// Appends one token to the state and returns the logits that follow it [V_padded].
torch::Tensor decode_step(HydraModelImpl& model, DecodeState& state, int64_t token);

// Refuses a model that is one pipeline stage of several (decoding needs every layer here).
void check_decodable(const HydraModelImpl& model);

// The logits [1, T, V_padded] after the final hidden states h [1, T, E] (before the final norm):
// the whole row on every rank under tensor parallelism (sampling needs it).
torch::Tensor next_token_logits(HydraModelImpl& model, const torch::Tensor& h);

}  // namespace hydra::model
