// The LM head and its cross entropy as one autograd Function that walks the rows in chunks,
// so that the logits of the whole batch, their float32 copy and their gradient never exist
// (docs/MODEL.md "Loss"; the math is unchanged).
//
// For each chunk of rows the forward computes the chunk's logits h_c W^T (in the inputs'
// dtype), its per-row loss (log-sum-exp in float32, float64 for float64 inputs) and, at once,
// the gradient of the mean loss with respect to those logits, (softmax - onehot) / count, from
// which it takes grad_h_c = g_c W and adds g_c^T h_c to grad_W. It saves grad_h and grad_W
// (grad_W as its float32 accumulator), not the logits; the backward only scales them by the
// incoming gradient, rounding grad_W to the weight's dtype once. Without grad mode,
// or when neither h nor W requires a gradient, only the loss is computed.
//
// On CUDA (bf16 or float32) a fused kernel (kernels/cross_entropy.h) turns each chunk's logits
// into its loss and gradient in place; elsewhere ATen ops do it, in place on one chunk buffer.
//
// Under tensor parallelism the head is split over the vocabulary (VocabShard): each rank
// computes its columns' logits of a chunk, and the rows' statistics (the maximum, the sum of
// exponentials, the target's logit) meet over the group in two small all-reduces a chunk, so
// that no rank ever holds the whole batch's logits either.
#pragma once

#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

namespace hydra::model {

// Targets equal to this are ignored (no loss, no gradient; the mean is over the others).
constexpr int64_t kIgnoreTarget = -100;

// Rows per chunk for `rows` rows and a vocabulary of `vocab` columns: the rows in equal chunks
// (the last one at most as long as the others), as few as keep one chunk's logits at most 1 GiB
// in float32 on CUDA and at most 16 MiB on the CPU. On CUDA every chunk adds its product into
// the float32 weight gradient (V x E, read and written once a chunk: 0.3 GB on the small model),
// so fewer chunks move fewer bytes (small's batch of 16 x 1024 tokens: 4 chunks of 4096 rows
// instead of 13 of up to 1334; docs/PERF.md, 2026-12-03). On the CPU 16 MiB stays under
// glibc's 32 MiB ceiling for reusing freed blocks instead of mapping fresh pages, whose
// first-touch faults cost more than the arithmetic here.
int64_t linear_cross_entropy_chunk_rows(int64_t rows, int64_t vocab, bool cuda);

// This rank's slice of a vocabulary-parallel head: its weight rows are the vocabulary's columns
// [begin, begin + rows). The two reductions act in place on small statistics tensors over the
// tensor-parallel group, outside autograd (model/tp_hooks.h supplies them).
struct VocabShard {
  int64_t begin = 0;
  std::function<void(at::Tensor&)> max_over_group;
  std::function<void(at::Tensor&)> sum_over_group;
};

// Mean over the rows whose target is not kIgnoreTarget of -log softmax(h W^T)[row, target]:
// h [N, E], weight [V, E] (same dtype), targets [N] int64. Columns >= vocab_valid are padding
// (-inf logits: no probability, zero gradient). chunk_rows 0: linear_cross_entropy_chunk_rows.
// Returns a 0-dim float32 tensor (float64 for float64 inputs); NaN when every target is
// ignored, as nll_loss. The count of targets stays a tensor: no host synchronisation.
// With a `shard`, weight is this rank's slice (targets stay ids of the whole vocabulary, and
// vocab_valid may be 0: a slice of padding only); every rank returns the whole loss, W's
// gradient of its slice, and h's gradient from its slice, whose sum over the group is h's
// gradient (the tp region's enter sums it in backward). Every rank of the group calls it with
// the same h, targets and chunk_rows.
at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t vocab_valid, int64_t chunk_rows = 0, const VocabShard* shard = nullptr);

}  // namespace hydra::model
