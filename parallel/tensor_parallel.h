// Megatron-style tensor parallelism over one Communicator (the tp group, ctx.tp), applied to
// the parallel-agnostic model from outside through two things it accepts in ModelOptions:
//   - make_tp_projection_factory(tp): kColumn specs become ColumnParallelProjection (this rank's
//     rows of W, no communication), kRow specs RowParallelProjection (this rank's columns of W,
//     partial outputs summed over tp), kReplicated specs a plain LinearProjection;
//   - make_tp_hooks(tp): the size/rank and the region functions of model/tp_hooks.h (where
//     replicated activations enter the tp region, the gradient hooks of replicated parameters
//     inside it, the vocab-parallel embedding sum and cross entropy).
//
// Replicated parameters. Their gradients are identical on every tp rank by construction:
// outside the tp region (residual-stream norms, routers, final norm) every rank computes the
// same complete gradient because each region's input gradient is summed over tp (enter); inside
// the region (MQA K/V, MLA latent down-projections and RoPE key, shared QK norms, CCQA KV heads
// when tp does not divide H_kv) a gradient hook sums the partial gradients over tp. No
// gradient all-reduce is needed after backward.
//
// Initialisation: every tp module draws the full single-process matrix from the global RNG on
// every rank (same seed) and keeps its slice, so the union of the slices is what one process
// initialises and the RNG advances identically.
//
// Ordering contract: the collectives here run inside forward and backward; every tp rank runs
// the same graph (routers see bitwise-identical inputs, so they make identical decisions), so
// the calls come in the same order on every rank, as the Communicator requires.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/projection.h"
#include "model/tp_hooks.h"
#include "parallel/communicator.h"

namespace hydra::parallel {

// Identity forward; the gradient is summed over `tp` backward.
at::Tensor copy_to_region(Communicator& tp, const at::Tensor& x);
// Summed over `tp` forward; identity backward.
at::Tensor reduce_from_region(Communicator& tp, const at::Tensor& x);
// Summed over `tp` in both directions (partial values used inside the region).
at::Tensor sum_in_region(Communicator& tp, const at::Tensor& x);

// y = x W_r^T (+ b_r): W_r the rows [r out/tp, (r+1) out/tp) of the spec's W (and bias).
// Input: the replicated x (inside the region); output: this rank's output features.
struct ColumnParallelProjection : model::ProjectionImpl {
  ColumnParallelProjection(const model::ProjectionSpec& spec, Communicator& tp);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor plain_weight() override { return bias.defined() ? at::Tensor() : weight; }
  at::Tensor weight;  // [out / tp, in]
  at::Tensor bias;    // [out / tp] or undefined
};

// y = sum over tp of x_r W_r^T (+ b): W_r the columns [r in/tp, (r+1) in/tp) of W. Input:
// this rank's input features; output: replicated (the end of the region).
struct RowParallelProjection : model::ProjectionImpl {
  RowParallelProjection(const model::ProjectionSpec& spec, Communicator& tp);
  at::Tensor forward(const at::Tensor& x) override;
  Communicator& tp;
  at::Tensor weight;  // [out, in / tp]
  at::Tensor bias;    // [out], replicated, added once after the sum
};

// The factory above. Throws ConfigError when tp does not divide a split dimension into whole
// units of the spec's granularity (a head is never split).
model::ProjectionFactory make_tp_projection_factory(Communicator& tp);

// The hooks of model/tp_hooks.h over `tp`. `tp` must outlive the model.
model::TensorParallelHooks make_tp_hooks(Communicator& tp);

// Mean cross entropy of vocabulary-sharded logits [..., V_local] against targets [...] (-100
// ignored); this rank holds the columns [vocab_begin, vocab_begin + V_local). The row max and
// the sum of exponentials are all-reduced over tp (and the target logit, from the rank that
// holds it); the full logits are never gathered. -inf columns (padding) get no probability.
// Computed in float32 (float64 for float64 logits). The result is the same on every tp rank.
at::Tensor vocab_parallel_cross_entropy(Communicator& tp, const at::Tensor& logits, const at::Tensor& targets,
                                        int64_t vocab_begin);

}  // namespace hydra::parallel
