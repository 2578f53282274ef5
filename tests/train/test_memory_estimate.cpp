// hydra info's peak-memory estimate (train/memory_estimate.h) against an inventory counted by
// hand here for a one-layer MQA model, and its behaviour in the knobs a user turns: linear in
// the micro-batch, smaller with recomputation and with MoD, pipeline stages holding the
// micro-batches 1F1B keeps in flight, ZeRO sharding the optimizer. How close it comes to a
// measured peak is a benchmark (hydra bench step prints both; docs/PERF.md).
#include <gtest/gtest.h>

#include <algorithm>

#include "model/activation_memory.h"
#include "model/model_info.h"
#include "train/memory_estimate.h"

namespace {

using hydra::train::RunConfig;

RunConfig one_mqa_layer() {
  RunConfig c;
  c.model.dim = 64;
  c.model.heads = 4;  // d 16
  c.model.kv_heads = 1;
  c.model.mlp_ratio = 2.0;  // F 128
  c.model.macro_blocks = 1;
  c.model.pattern = {"mqa"};
  c.model.vocab_size = 256;  // padded: 256
  c.model.tie_embeddings = false;
  c.model.mod.enabled = false;
  c.model.mor.recursions = 1;
  c.model.ccqa.compress = "head_dim";  // the layout of the counts below (one test sets both)
  c.train.dtype = "bf16";
  c.train.global_batch = 2;
  c.train.micro_batch = 2;
  c.train.seq_len = 32;
  return c;
}

hydra::parallel::GridShape grid(int dp = 1, int tp = 1, int pp = 1) {
  hydra::parallel::GridShape g;
  g.dp = dp;
  g.tp = tp;
  g.pp = pp;
  return g;
}

TEST(MemoryEstimate, OneMqaLayerMatchesTheHandCountedInventory) {
  const RunConfig c = one_mqa_layer();
  const auto e = hydra::train::estimate_memory(c, grid());
  ASSERT_EQ(e.stages.size(), 1u);
  const auto& m = e.stages[0];
  const int64_t N = hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total;
  EXPECT_EQ(m.weights, 2 * N);     // bf16
  // One rank: no float32 gradient buffer (AdamW reads the bf16 .grad, which does not exist at
  // the peak).
  EXPECT_EQ(m.gradients, 0);
  EXPECT_EQ(m.optimizer, 13 * N);  // master, m, v (fp32), decay mask (a byte)
  // Per token, in bf16 elements: x, n1, h, n2 (4 x 64) + gate, up, SwiGLU (3 x 128) + q before
  // and after norm/RoPE, attention output, its norm's output (4 x 64) + k before and after, v
  // (3 x 16) = 944; fp32: 2 pre-norm rstd, q rstd (4 heads), k rstd (1), log-sum-exp (4),
  // output-norm rstd (4) = 15.
  const int64_t layer = 944 * 2 + 15 * 4;
  const int64_t head = 2 * 64 * 2 + 4;  // final norm input and rstd, the head's grad of h
  const int64_t tokens = 2 * 32;
  const int64_t head_weight_grad = 256 * 64 * 4;  // its float32 accumulator, kept until the backward
  EXPECT_EQ(m.activations, tokens * (layer + head) + head_weight_grad);
  // The MLP backward's (3 x 128 + 2 x 64) x 2 bytes per token: more than the head's forward
  // holds beside the activations (a 64-row chunk of bf16 logits).
  EXPECT_EQ(m.buffers, tokens * (3 * 128 + 2 * 64) * 2);
  EXPECT_GT(m.buffers, 64 * 256 * 2);
  EXPECT_EQ(m.peak(), m.weights + m.gradients + m.optimizer + m.activations + m.buffers);
  EXPECT_EQ(e.micro_batch, 2);

  // Recomputing the MLP drops gate, up and SwiGLU's output (3 x 128 bf16 per token); its
  // backward holds them again with the MLP backward's gradients.
  RunConfig mlp = c;
  mlp.train.activation_checkpointing = "mlp";
  const auto recomputed = hydra::train::estimate_memory(mlp, grid());  // (a reference into a temporary dangled)
  const auto& r = recomputed.stages[0];
  EXPECT_EQ(r.activations, m.activations - tokens * 3 * 128 * 2);
  EXPECT_EQ(r.buffers, std::max<int64_t>(m.buffers, tokens * ((3 * 128 + 2 * 64) * 2 + 3 * 128 * 2)));
}

// One CCQA layer, the same width in both layouts (E 256, H 4, H_kv 4, C 4, K 3: latents Lq =
// Lk = 64). head_dim: 4 heads of 16, the fused prologue, which saves q0, k0, v, q, k, the
// attention's output and its norm's output: 7 x 64 bf16 a token, plus a count of v the inventory
// has always made (8 x 64 in all); fp32: the log-sum-exp and the output norm's rstd, 4 heads
// each. heads: 1 head of 64, above kCcqaFusedPrologueMaxHeadDim, so the products path: q0, k0
// (128), each convolution pair's windows (3 x 64 + a bias block of 8, twice: 400), the
// convolutions' outputs (128), the shifted v (64), the mix's q and k (128), the output and its
// norm's output (128) = 976; fp32: 1 head each. (Before the products path was counted, both
// layouts gave 512 elements.)
TEST(MemoryEstimate, CcqaAboveTheFusedPrologueCountsTheProductsPath) {
  RunConfig c = one_mqa_layer();
  c.model.dim = 256;
  c.model.heads = 4;
  c.model.kv_heads = 4;
  c.model.mlp_ratio = 2.0;  // F 512: the MLP's backward stays the widest transient in both
  c.model.pattern = {"ccqa"};
  const int64_t tokens = 2 * 32, norms_and_mlp = (4 * 256 + 3 * 512) * 2 + 2 * 4;
  const auto activations = [&](const char* compress) {
    RunConfig r = c;
    r.model.ccqa.compress = compress;
    const auto e = hydra::train::estimate_memory(r, grid());
    const int64_t head = 2 * 256 * 2 + 4, head_weight_grad = 256 * 256 * 4;
    return (e.stages[0].activations - head_weight_grad) / tokens - head;
  };
  EXPECT_EQ(activations("head_dim"), norms_and_mlp + 512 * 2 + 2 * 4 * 4);
  EXPECT_EQ(activations("heads"), norms_and_mlp + 976 * 2 + 2 * 1 * 4);
}

// A tp rank's CCQA layer when tp does not divide the key/value heads: each rank keeps all of
// them (small under `heads`: 3 query heads, 1 key/value head, at tp 3). E 512, H 8, H_kv 2,
// C 4, heads: H_c 2, H_kc 1, d_h 64 (the products path). tp 2: 1 query head (Lq 64) and the
// whole key/value latent (Lk 64): q0, k0 (128), windows 3 x 128 + 8 x (1 + 1) = 400, the
// convolutions' outputs (128), the shifted v (64), the mix's q and k (128), the output and its
// norm's output (128) = 976; fp32: 1 head, twice. The pre-norms and the MLP: 4 E + 3 F / tp,
// F 1024, and two rstd. (Before, the key/value latent was divided by tp: 64 / 2.)
TEST(MemoryEstimate, CcqaTpRankKeepsReplicatedKeyValueHeadsWhole) {
  hydra::model::ModelConfig c = one_mqa_layer().model;
  c.dim = 512;
  c.heads = 8;
  c.kv_heads = 2;
  c.pattern = {"ccqa"};
  c.ccqa.compress = "heads";
  const auto a = hydra::model::layer_activation_bytes(c, 0, 2, 2);
  EXPECT_EQ(a.saved, (4 * 512 + 3 * 1024 / 2) * 2 + 2 * 4 + 976 * 2 + 2 * 1 * 4);
}

// Tied embeddings on one stage: the head is the embedding, held once (the estimate counted a
// second copy of it, V x E elements of weights and optimizer state, as if a last pipeline stage
// held one); under pp 2 the last stage does hold its copy.
TEST(MemoryEstimate, TiedEmbeddingsOnOneStageAreHeldOnce) {
  RunConfig c = one_mqa_layer();
  c.model.tie_embeddings = true;
  const int64_t N = hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total;
  const auto one = hydra::train::estimate_memory(c, grid());
  EXPECT_EQ(one.stages[0].weights, 2 * N);
  EXPECT_EQ(one.stages[0].optimizer, 13 * N);
  c.model.macro_blocks = 2;
  const int64_t N2 = hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total;
  const auto two = hydra::train::estimate_memory(c, grid(1, 1, 2));
  EXPECT_EQ(two.stages[0].weights + two.stages[1].weights, 2 * (N2 + 256 * 64));
}

// train.freeze: a frozen parameter keeps its weights but has no gradient buffer and no optimizer
// state; and before the first parameter that trains (no recomputation), autograd records
// nothing, so a frozen embedding and first layer keep no activations. (Against the trainer's own
// accounting: tests/train/test_freeze_parallel_train.cpp.)
TEST(MemoryEstimate, FrozenParametersHoldWeightsOnlyAndAFrozenPrefixKeepsNoActivations) {
  RunConfig c = one_mqa_layer();
  const int64_t N = hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total;
  const int64_t embedding = 256 * 64;
  const auto whole = hydra::train::estimate_memory(c, grid(2, 1, 1));
  c.train.freeze = {"embed.weight"};
  const auto no_embed = hydra::train::estimate_memory(c, grid(2, 1, 1));
  const auto& m = no_embed.stages[0];
  EXPECT_EQ(m.weights, 2 * N);
  EXPECT_EQ(m.optimizer, 13 * (N - embedding));  // dp 2 without ZeRO: each rank the whole state
  EXPECT_EQ(m.gradients, 4 * (N - embedding));   // the flat float32 gradient of what trains
  EXPECT_EQ(m.activations, whole.stages[0].activations);  // layer 0 trains: the gradient flows from it
  // The layer frozen too (the head still trains): its activations and its backward's buffer go.
  c.train.freeze = {"embed.weight", "blocks.0.layers.0.*"};
  const auto prefix = hydra::train::estimate_memory(c, grid());
  const int64_t layer = 944 * 2 + 15 * 4, tokens = 2 * 32;  // the hand count above
  EXPECT_EQ(prefix.stages[0].activations, whole.stages[0].activations - tokens * layer);
  EXPECT_LT(prefix.stages[0].buffers, whole.stages[0].buffers);
  const int64_t layer_params = hydra::model::layer_params(c.model, 0);
  EXPECT_EQ(prefix.stages[0].optimizer, 13 * (N - embedding - layer_params));
  // With recomputation too: a segment none of whose parameters trains is not recomputed and,
  // its input needing no gradient either, keeps nothing, not even the input a recomputed layer
  // keeps (E bf16 values a token).
  c.train.activation_checkpointing = "layer";
  RunConfig trained = one_mqa_layer();
  trained.train.activation_checkpointing = "layer";
  EXPECT_EQ(hydra::train::estimate_memory(c, grid()).stages[0].activations,
            hydra::train::estimate_memory(trained, grid()).stages[0].activations - tokens * 64 * 2);
}

TEST(MemoryEstimate, ActivationsGrowWithTheMicroBatchAndShrinkWithRecomputationAndMod) {
  RunConfig c = one_mqa_layer();
  c.model.pattern = {"mqa", "ccqa", "mla", "ccqa"};
  c.model.macro_blocks = 2;
  const int64_t fixed = 256 * 64 * 4;  // the head's float32 weight gradient does not scale
  const auto act = [&](const RunConfig& cfg) { return hydra::train::estimate_memory(cfg, grid()).stages[0].activations; };
  const int64_t base = act(c);
  RunConfig twice = c;
  twice.train.global_batch = twice.train.micro_batch = 4;
  EXPECT_EQ(act(twice) - fixed, 2 * (base - fixed));
  RunConfig layer = c, block = c;
  layer.train.activation_checkpointing = "layer";
  block.train.activation_checkpointing = "block";
  EXPECT_LT(act(layer), base / 3);
  EXPECT_LT(act(block), act(layer));
  RunConfig mlp = c;
  mlp.train.activation_checkpointing = "mlp";
  EXPECT_LT(act(mlp), base);
  EXPECT_GT(act(mlp), act(layer));
  RunConfig mod = c;
  mod.model.mod.enabled = true;
  mod.model.mod.capacity = 0.5;
  mod.model.mod.layers = {1, 3};
  EXPECT_LT(act(mod), base);
  RunConfig mor = c;
  mor.model.mor.recursions = 2;  // recursion 2 takes half the tokens again
  EXPECT_GT(act(mor), base + (base - fixed) / 3);
  EXPECT_LT(act(mor), 2 * base);
}

TEST(MemoryEstimate, PipelineStagesHoldTheirMicroBatchesInFlightAndZeroShardsTheOptimizer) {
  RunConfig c = one_mqa_layer();
  c.model.pattern = {"mqa", "mqa"};
  c.model.macro_blocks = 2;  // 4 layers
  c.train.global_batch = 8;  // 4 micro-batches of 2
  const auto e = hydra::train::estimate_memory(c, grid(1, 1, 2));
  ASSERT_EQ(e.stages.size(), 2u);
  EXPECT_EQ(e.stages[0].micro_batches_in_flight, 2);
  EXPECT_EQ(e.stages[1].micro_batches_in_flight, 1);
  const auto one = hydra::train::estimate_memory(c, grid());
  EXPECT_LT(e.worst().peak(), one.stages[0].peak());

  c.parallel.zero_stage = 1;
  const auto z = hydra::train::estimate_memory(c, grid(4, 1, 1));
  EXPECT_NEAR(static_cast<double>(z.stages[0].optimizer), one.stages[0].optimizer / 4.0, 13.0 * 4);

  // Stage 2 keeps bucket-sized staging buffers (two with overlap) and the owned shard; buckets
  // hold whole parameters, so the largest is the embedding (256 x 64) when buckets are smaller.
  c.parallel.zero_stage = 2;
  c.parallel.bucket_mb = 0.01;  // 2,621 elements
  const int64_t owned = (hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total + 3) / 4;
  EXPECT_EQ(hydra::train::estimate_memory(c, grid(4, 1, 1)).stages[0].gradients, 4 * (2 * 256 * 64 + owned));
  c.parallel.overlap_grad_reduce = false;
  EXPECT_EQ(hydra::train::estimate_memory(c, grid(4, 1, 1)).stages[0].gradients, 4 * (256 * 64 + owned));
  // train.freeze: a frozen matrix is in no bucket. With the (untied) head still training it is
  // the largest bucket; with both frozen the buckets are bucket-sized.
  const int64_t vocab_matrix = 256 * 64;
  const int64_t owned_without = (hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total -
                                 vocab_matrix + 3) / 4;
  c.train.freeze = {"embed.weight"};
  EXPECT_EQ(hydra::train::estimate_memory(c, grid(4, 1, 1)).stages[0].gradients, 4 * (vocab_matrix + owned_without));
  c.train.freeze = {"embed.weight", "head.weight"};
  const int64_t owned_neither = (hydra::model::compute_model_stats(c.model, c.train.seq_len).params_total -
                                 2 * vocab_matrix + 3) / 4;
  EXPECT_EQ(hydra::train::estimate_memory(c, grid(4, 1, 1)).stages[0].gradients, 4 * (2621 + owned_neither));
}

}  // namespace
