#include "model/linear_cross_entropy.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard / GradMode: ATen.h does not bring them in LibTorch 2.x
#include <torch/csrc/autograd/custom_function.h>

#include "common/errors.h"
#if HYDRA_CUDA
#include "model/cross_entropy_fused.h"
#endif

namespace hydra::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The dtype of the softmax, the loss and the weight-gradient accumulator.
at::ScalarType accumulation_type(const at::Tensor& h) {
  return h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// What one call needs beyond its inputs.
struct ChunkPlan {
  int64_t vocab_valid = 0;
  int64_t chunk_rows = 0;
  bool grad_h = false;  // compute grad_h (h requires a gradient)
  bool grad_w = false;  // compute grad_W
  const VocabShard* shard = nullptr;  // tensor parallelism: this rank's slice of the vocabulary
};

struct ChunkedResult {
  at::Tensor loss;    // 0-dim, accumulation type
  at::Tensor grad_h;  // [N, E], h's dtype (undefined unless plan.grad_h)
  at::Tensor grad_w;  // [V, E], W's dtype (undefined unless plan.grad_w)
};

// One chunk with ATen ops, in place on `logits` [c, V]: the per-row loss (0 for ignored rows)
// into `loss_rows`, and with `scale` (per row: 1 / count, 0 for ignored rows) the gradient
// (softmax - onehot) * scale into `logits`. Any device; every big step is in place, so a call
// allocates nothing of the chunk's size (but the float32 copy of a bf16 chunk). With a shard,
// `logits` are this rank's columns and the row statistics are reduced over the group.
void chunk_cross_entropy_aten(at::Tensor& logits, const at::Tensor& targets, int64_t vocab_valid,
                              const at::Tensor& scale, at::Tensor loss_rows, const VocabShard* shard) {
  const int64_t vocab = logits.size(1);
  at::Tensor x = logits.to(loss_rows.scalar_type());  // the chunk itself when already float32/64
  if (vocab > vocab_valid) x.narrow(1, vocab_valid, vocab - vocab_valid).fill_(-std::numeric_limits<double>::infinity());
  const at::Tensor valid = targets.ne(kIgnoreTarget);
  // Rows whose target is here: every counted row in one process (a target outside [0, V) then
  // fails in gather, as in nll_loss), those of this slice under tp. The others read column 0
  // and are masked with where (column 0 may be padding: -inf times 0 would be NaN).
  const int64_t begin = shard ? shard->begin : 0;
  const at::Tensor here = shard ? valid & targets.ge(begin) & targets.lt(begin + vocab) : valid;
  const at::Tensor column = ((targets - begin) * here).unsqueeze(1);
  at::Tensor row_max = at::amax(x, {1}, /*keepdim=*/true);
  if (shard) shard->max_over_group(row_max);
  x.sub_(row_max);  // x - max: exp cannot overflow
  // Row statistics: logit[target] - max (from the slice that holds the target), sum of exp.
  at::Tensor stats = at::empty({2, x.size(0)}, x.options());
  stats[0].copy_(at::where(here, x.gather(1, column).squeeze(1), at::zeros({}, x.options())));
  x.exp_();
  stats[1].copy_(x.sum(1));
  if (shard) shard->sum_over_group(stats);
  const at::Tensor shifted_target = stats[0], sum = stats[1].unsqueeze(1);
  // lse - logit[target] = log(sum) - (logit[target] - max)
  loss_rows.copy_((sum.squeeze(1).log() - shifted_target).masked_fill_(valid.logical_not(), 0));
  if (!scale.defined()) return;
  const at::Tensor row_scale = scale.unsqueeze(1);
  x.mul_(row_scale / sum);  // softmax * scale
  // - onehot * scale where the target is here (ignored rows: scale 0)
  x.scatter_add_(1, column, at::where(here.unsqueeze(1), row_scale.neg(), at::zeros({}, x.options())));
  if (!x.is_same(logits)) logits.copy_(x);
}

// acc [V, E] (accumulation type) += g^T h_c.
void accumulate_weight_grad(at::Tensor& acc, const at::Tensor& g, const at::Tensor& h_c) {
  if (g.scalar_type() == acc.scalar_type()) {
    acc.addmm_(g.t(), h_c);
    return;
  }
#if HYDRA_CUDA
  if (fused_weight_grad_applies(acc, g, h_c)) {
    accumulate_weight_grad_fused(acc, g, h_c);  // bf16 products summed straight into float32
    return;
  }
#endif
  acc.add_(at::mm(g.t(), h_c));  // each chunk's product rounded to the compute dtype once
}

ChunkedResult run_chunks(const at::Tensor& h, const at::Tensor& w, const at::Tensor& targets, const ChunkPlan& plan) {
  const int64_t rows = h.size(0), vocab = w.size(0);
  const at::ScalarType acc = accumulation_type(h);
  const bool any_grad = plan.grad_h || plan.grad_w;
  const at::Tensor count = targets.ne(kIgnoreTarget).sum().to(acc);  // a tensor: no host sync
  // Gradient scale per row: 1 / count for counted rows, 0 for ignored ones. clamp: with every
  // target ignored the gradient is 0 (as nll_loss's), while the loss below is 0/0 = NaN.
  at::Tensor row_scale;
  if (any_grad) row_scale = targets.ne(kIgnoreTarget).to(acc) / count.clamp_min(1);
  at::Tensor loss_rows = at::empty({rows}, h.options().dtype(acc));
  ChunkedResult out;
  if (plan.grad_h) out.grad_h = at::empty_like(h);
  // grad_W is a sum over every row of the batch: accumulated in float32 across chunks (one
  // rounding to bf16 at the end, as the single GEMM of the unchunked head), not in bf16,
  // where each chunk's addition would round the running sum again. It costs V x E float32
  // (154 MB for the small model's 50304 x 768) and is kept so until the backward, which
  // multiplies it by the incoming gradient and rounds once (one pass instead of four).
  at::Tensor grad_w_acc;
  if (plan.grad_w) grad_w_acc = at::zeros({vocab, w.size(1)}, w.options().dtype(acc));
  // One chunk buffer for every chunk (the last one uses its leading rows).
  const int64_t chunk = std::min(plan.chunk_rows, rows);
  at::Tensor buffer = at::empty({chunk, vocab}, h.options());
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t c = std::min(chunk, rows - first);
    const at::Tensor h_c = h.narrow(0, first, c), targets_c = targets.narrow(0, first, c);
    at::Tensor logits = buffer.narrow(0, 0, c);
    at::mm_out(logits, h_c, w.t());
    at::Tensor loss_c = loss_rows.narrow(0, first, c);
#if HYDRA_CUDA
    // (Under tp the fused kernel would need the statistics of every slice: ATen's path then.)
    if (!plan.shard && fused_cross_entropy_applies(logits)) {
      cross_entropy_chunk_fused(logits, targets_c, plan.vocab_valid, any_grad ? row_scale.narrow(0, first, c) : at::Tensor(),
                                loss_c);
    } else
#endif
    {
      chunk_cross_entropy_aten(logits, targets_c, plan.vocab_valid, any_grad ? row_scale.narrow(0, first, c) : at::Tensor(),
                               loss_c, plan.shard);
    }
    if (plan.grad_h) {
      at::Tensor grad_h_c = out.grad_h.narrow(0, first, c);
      at::mm_out(grad_h_c, logits, w);
    }
    if (plan.grad_w) accumulate_weight_grad(grad_w_acc, logits, h_c);
  }
  out.loss = loss_rows.sum() / count;
  if (plan.grad_w) out.grad_w = grad_w_acc;
  return out;
}

// grad * t, with the product taken in the accumulation type and rounded once to `dtype` (t
// itself may be in the accumulation type already: one kernel then).
at::Tensor scaled(const at::Tensor& t, const at::Tensor& grad, at::ScalarType dtype) {
  if (!t.defined()) return {};
  const at::ScalarType acc = accumulation_type(t);
  if (t.scalar_type() != acc) return (t.to(acc) * grad.to(acc)).to(dtype);
  at::Tensor out = at::empty(t.sizes(), t.options().dtype(dtype));
  return at::mul_out(out, t, grad.to(acc));
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t vocab_valid, int64_t chunk_rows, bool grad_h,
                            bool grad_w, const VocabShard* shard) {
    ChunkPlan plan{vocab_valid, chunk_rows, grad_h, grad_w, shard};
    ChunkedResult r = run_chunks(h.contiguous(), weight.contiguous(), targets.contiguous(), plan);
    ctx->save_for_backward({r.grad_h, r.grad_w});
    ctx->saved_data["h_dtype"] = static_cast<int64_t>(h.scalar_type());
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return r.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    // The incoming gradient is a 0-dim tensor on the device: a tensor product, no .item().
    const auto h_dtype = static_cast<at::ScalarType>(ctx->saved_data["h_dtype"].toInt());
    const auto w_dtype = static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    return {scaled(saved[0], grads[0], h_dtype), scaled(saved[1], grads[0], w_dtype), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t linear_cross_entropy_chunk_rows(int64_t rows, int64_t vocab, bool cuda) {
  const int64_t budget = cuda ? (int64_t{1} << 30) : (int64_t{16} << 20);  // bytes of float32 logits
  const int64_t most = std::max<int64_t>(1, budget / (4 * std::max<int64_t>(1, vocab)));
  const int64_t chunks = std::max<int64_t>(1, (rows + most - 1) / most);
  return std::max<int64_t>(1, (rows + chunks - 1) / chunks);
}

at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t vocab_valid, int64_t chunk_rows, const VocabShard* shard) {
  HYDRA_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1),
              "linear_cross_entropy: h " << h.sizes() << ", weight " << weight.sizes());
  HYDRA_CHECK(h.scalar_type() == weight.scalar_type(),
              "linear_cross_entropy: h is " << h.scalar_type() << ", weight " << weight.scalar_type());
  HYDRA_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0) && targets.scalar_type() == at::kLong,
              "linear_cross_entropy: targets " << targets.sizes() << " " << targets.scalar_type() << " for h "
                                               << h.sizes());
  HYDRA_CHECK((shard ? 0 : 1) <= vocab_valid && vocab_valid <= weight.size(0),
              "linear_cross_entropy: vocab_valid " << vocab_valid << " of " << weight.size(0));
  HYDRA_CHECK(!shard || (shard->max_over_group && shard->sum_over_group), "linear_cross_entropy: a shard without reductions");
  if (chunk_rows <= 0) chunk_rows = linear_cross_entropy_chunk_rows(h.size(0), weight.size(0), h.is_cuda());
  if (h.size(0) == 0) {  // nothing to average: NaN, as nll_loss; still a node of the graph
    return (h.sum() * 0 + weight.sum() * 0).to(accumulation_type(h)) / 0.0;
  }
  const bool grad = at::GradMode::is_enabled();
  return LinearCrossEntropyFunction::apply(h, weight, targets, vocab_valid, chunk_rows, grad && h.requires_grad(),
                                           grad && weight.requires_grad(), shard);
}

}  // namespace hydra::model
