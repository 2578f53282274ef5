// Token routing shared by Mixture-of-Depths (per layer) and Mixture-of-Recursions (per
// macro-block): a router scores tokens, a selection picks some, the routed function runs on
// the selected subsequence (in position order, original positions, attending only to each
// other), and x + sigmoid(r) * (f(x) - x) is written back to the selected tokens.
//
// Two selection modes:
//  - kTopK (training): per sequence the top k scores among the eligible tokens. Not causal
//    (a token's fate depends on later tokens), hence the auxiliary loss below.
//  - kThreshold (evaluation/inference): a token is selected when sigmoid(r) > 0.5, i.e.
//    r > 0, a decision that depends on that token only: causal.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace hydra::model {

enum class RouteMode { kTopK, kThreshold };

// What one router application did, summed over the batch (for logs and tests).
struct RoutingStat {
  std::string name;        // e.g. "blocks.0.layers.3.router" or "blocks.0.mor_routers.0"
  int64_t selected = 0;    // tokens that went through
  int64_t candidates = 0;  // tokens that could have
  // Sum over the candidates of the binary entropy (nats) of sigmoid(r): 0-dim float32, no
  // autograd history; recorded only when RunContext::router_entropy asks (it costs kernels).
  at::Tensor entropy_sum;
};
using RoutingLog = std::vector<RoutingStat>;

struct Selection {
  // [B, n] token indices of the routed subsequence, selected tokens first in position order.
  // kTopK: n = k, all selected. kThreshold: n = S, a permutation: the selected tokens, then
  // the rest (processed too but discarded). Keeping n = S there makes every shape independent
  // of the data, so outputs at t are bit-identical whatever later tokens are (causality test),
  // at the price of no compute saving in the reference threshold path.
  at::Tensor index;
  at::Tensor selected;  // [B, n] bool: the slot holds a selected token
  at::Tensor member;    // [B, S] float 0/1: membership, the auxiliary loss target
  int64_t selected_count = 0;
};

// logits [B, S]; eligible [B, S] bool or undefined (all). k: tokens per sequence (kTopK; at
// most the eligible count of every sequence).
Selection select_tokens(const at::Tensor& logits, const at::Tensor& eligible, int64_t k, RouteMode mode);

// Decoding (model/decode.h): the threshold rule's chosen tokens alone, of one sequence
// (logits [1, n]): index [1, k] of the eligible tokens with r > 0 in position order, all
// selected, k = selected_count (0 when none); member as select_tokens'.
Selection select_chosen(const at::Tensor& logits, const at::Tensor& eligible);

// The routed function: maps (x_sub [B, n, E], positions_sub [B, n]) to {f(x_sub), aux}.
using RoutedFn = std::function<std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&)>;

// Runs f on the selection and returns {x with x + sigmoid(r) (f(x) - x) at the selected
// tokens, f's aux}. Unselected tokens pass unchanged (and get gradient 1 through x).
std::vector<at::Tensor> apply_routed(const at::Tensor& x, const at::Tensor& positions, const at::Tensor& logits,
                                     const Selection& selection, const RoutedFn& f);

// Sum over the eligible tokens (eligible [B, S] bool, or undefined: all) of the binary entropy
// of sigmoid(logits), in nats; 0-dim float32 without autograd history.
at::Tensor router_entropy_sum(const at::Tensor& logits, const at::Tensor& eligible);

// Mean binary cross entropy of sigmoid(logits) against membership over the eligible tokens.
at::Tensor router_aux_loss(const at::Tensor& logits, const Selection& selection, const at::Tensor& eligible);

}  // namespace hydra::model
