#include "train/memory_estimate.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/errors.h"
#include "model/activation_memory.h"
#include "model/dims.h"
#include "model/linear_cross_entropy.h"
#include "model/model_info.h"
#include "model/parameter_inventory.h"
#include "model/recompute.h"
#include "parallel/pipeline_plan.h"
#include "parallel/zero_optimizer.h"
#include "train/frozen_params.h"

namespace hydra::train {
namespace {

// What train.freeze leaves untrained, from the parameter inventory (no model is built).
struct Frozen {
  std::vector<int64_t> elements;  // per pipeline stage (a tied embedding's copy on the last stage too)
  std::vector<bool> layer_trains;  // per global layer: any of its parameters (its block's MoR routers on the first) trains
  bool embedding_trains = true;
  bool head_trains = true;  // the last stage's vocabulary matrix: head.weight, or the tied embedding's copy
};

Frozen frozen_parameters(const RunConfig& config, const std::vector<model::StageLayers>& plan) {
  const model::ModelConfig& c = config.model;
  Frozen f;
  f.elements.assign(plan.size(), 0);
  f.layer_trains.assign(static_cast<size_t>(c.macro_blocks) * c.pattern.size(), false);
  const auto stage_of = [&](int layer) {
    for (size_t s = 0; s < plan.size(); ++s) {
      if (layer >= plan[s].first && layer < plan[s].end) return s;
    }
    HYDRA_FAIL(common::RuntimeFailure, "layer " << layer << " is on no pipeline stage");
  };
  for (const model::ParameterEntry& p : model::parameter_inventory(c)) {
    const bool frozen = is_frozen(config.train.freeze, p.name);
    if (p.layer == model::ParameterEntry::kFirstStage) {
      f.embedding_trains = !frozen;
      if (frozen) f.elements.front() += p.elements;
      if (frozen && c.tie_embeddings && plan.size() > 1) f.elements.back() += p.elements;  // the last stage's copy
    } else if (p.layer == model::ParameterEntry::kLastStage) {
      if (frozen) f.elements.back() += p.elements;
      if (p.name == "head.weight") f.head_trains = !frozen;
    } else {
      if (frozen) f.elements[stage_of(p.layer)] += p.elements;
      if (!frozen) f.layer_trains[static_cast<size_t>(p.layer)] = true;
    }
  }
  if (c.tie_embeddings) f.head_trains = f.embedding_trains;
  return f;
}

// What one micro-batch keeps for the backward on a stage, and the widest extra its backward
// (or recomputation) holds at once. Where no gradient flows yet (train.freeze: the embedding and
// the first layers frozen, on the first stage), the layers record nothing.
struct StageActivations {
  int64_t saved = 0;
  int64_t transient = 0;
};

StageActivations stage_activations(const RunConfig& config, const model::StageLayers& layers, int64_t micro_batch,
                                   int dtype, int tp, const Frozen& frozen) {
  const model::ModelConfig& c = config.model;
  const int64_t S = config.train.seq_len, P = static_cast<int64_t>(c.pattern.size());
  using model::Checkpointing;
  const Checkpointing checkpointing = model::parse_checkpointing(config.train.activation_checkpointing);
  const int64_t input_bytes = c.dim * dtype;  // what a recomputed layer or block keeps: its input
  const int R = c.mor.recursions;
  const model::Dims c_dims = model::model_dims(c);
  const int first_block = layers.first / static_cast<int>(P);
  const int end_block = static_cast<int>((layers.end + P - 1) / P);
  // Autograd records an operation only when an input or a parameter needs a gradient. A later
  // stage's input always does (the schedule marks it, to send its gradient back), so only the
  // first stage can start without a gradient flowing. A recomputed segment with a parameter that
  // trains marks its input as needing one (model/recompute.cpp): in block mode a whole pass of a
  // block with such a parameter counts.
  bool flows = layers.first > 0 || frozen.embedding_trains;
  StageActivations out;
  for (int block = first_block; block < end_block; ++block) {
    if (checkpointing == Checkpointing::kBlock) {
      for (int position = 0; position < P; ++position) {
        const int layer = block * static_cast<int>(P) + position;
        if (layer >= layers.first && layer < layers.end) flows = flows || frozen.layer_trains[static_cast<size_t>(layer)];
      }
    }
    for (int r = 1; r <= R; ++r) {
      const int64_t tokens = model::mor_capacity_tokens(S, r, R);  // per sequence, in this pass
      int64_t pass_saved = 0;
      if (r >= 2 && flows) {  // the MoR router scores every token; the gated update of the chosen ones
        pass_saved += S * c.dim * dtype + tokens * model::mod_overhead_bytes(c, dtype);
      }
      for (int position = 0; position < P; ++position) {
        const int layer = block * static_cast<int>(P) + position;
        if (layer < layers.first || layer >= layers.end) continue;
        flows = flows || frozen.layer_trains[static_cast<size_t>(layer)];
        if (!flows) continue;
        const model::ActivationBytes a = model::layer_activation_bytes(c, position, dtype, tp);
        int64_t through = tokens;  // tokens the layer itself processes
        if (model::is_mod_layer(c, position)) {
          through = model::mod_capacity_tokens(c.mod.capacity, tokens);
          pass_saved += tokens * c.dim * dtype + through * model::mod_overhead_bytes(c, dtype);
        }
        if (checkpointing == Checkpointing::kMlp) {
          // The MLP keeps its input (n2, counted above) instead of gate, up and SwiGLU's output;
          // its backward recomputes them: three F-wide tensors per token at once.
          const int64_t mlp_saved = 3 * c_dims.F / tp * dtype;
          pass_saved += through * (a.saved - mlp_saved);
          out.transient = std::max(out.transient, micro_batch * through * (a.transient + mlp_saved));
        } else if (checkpointing == Checkpointing::kLayer) {
          pass_saved += through * input_bytes;
          out.transient = std::max(out.transient, micro_batch * through * (a.saved + a.transient));
        } else {
          pass_saved += through * a.saved;
          out.transient = std::max(out.transient, micro_batch * through * a.transient);
        }
      }
      if (checkpointing == Checkpointing::kBlock) {
        // The block keeps its input; its backward recomputes the whole pass at once.
        out.transient = std::max(out.transient, micro_batch * pass_saved);
        pass_saved = tokens * input_bytes;
      }
      out.saved += micro_batch * pass_saved;
    }
  }
  return out;
}

}  // namespace

const StageMemory& MemoryEstimate::worst() const {
  HYDRA_CHECK(!stages.empty(), "MemoryEstimate: no stages");
  return *std::max_element(stages.begin(), stages.end(),
                           [](const StageMemory& a, const StageMemory& b) { return a.peak() < b.peak(); });
}

MemoryEstimate estimate_memory(const RunConfig& config, const parallel::GridShape& shape) {
  const auto& t = config.train;
  const model::ModelConfig& c = config.model;
  const int dtype = t.dtype == "bf16" ? 2 : 4;
  const int dp = shape.dp, tp = shape.tp, pp = shape.pp;
  const int64_t micro_batch = std::max<int64_t>(1, per_rank_micro_batch(config, dp));
  const int64_t accumulation = std::max<int64_t>(1, t.global_batch / dp / micro_batch);
  const int64_t tokens = micro_batch * t.seq_len;
  const auto plan = parallel::plan_pipeline_stages(c, pp, config.parallel.pp_layers);
  const std::vector<int64_t> params = parallel::stage_params(c, plan);
  const Frozen frozen = frozen_parameters(config, plan);
  const int64_t vocab_local = model::padded_vocab(c.vocab_size, tp) / tp;
  const int64_t bucket_numel = std::max<int64_t>(1, std::llround(config.parallel.bucket_mb * (1 << 20) / 4));

  MemoryEstimate estimate;
  estimate.micro_batch = micro_batch;
  for (int s = 0; s < pp; ++s) {
    StageMemory m;
    m.stage = s;
    // Persistent: the ZeRO formula for this rank's share of the parameters that train (tensor
    // parallelism splits the sharded weights; the few replicated ones, norms and one-head
    // projections, are counted as split too); frozen ones hold their weights only.
    const int64_t held = (params[s] + tp - 1) / tp;
    const int64_t numel = (params[s] - frozen.elements[s] + tp - 1) / tp;
    const int stage = dp > 1 ? config.parallel.zero_stage : 0;
    const int64_t owned = stage > 0 ? (numel + dp - 1) / dp : numel;
    // The largest bucket: buckets hold whole parameters, so the embedding (tied: on the first
    // and the last stage) or the head, larger than a bucket, is a bucket of its own where it trains.
    int64_t largest_bucket = std::min(numel, bucket_numel);
    if ((s == 0 && frozen.embedding_trains) || (s == pp - 1 && frozen.head_trains)) {
      largest_bucket = std::max(largest_bucket, vocab_local * c.dim);
    }
    // Stage 2 with overlap gathers into two staging buckets (data_parallel_optimizer.cpp).
    const int staging = stage == 2 && config.parallel.overlap_grad_reduce ? 2 : 1;
    const parallel::ZeroMemory z =
        parallel::zero_memory_formula(stage, dp, numel, dtype, owned, largest_bucket, staging);
    m.weights = static_cast<int64_t>(dtype) * held;
    m.gradients = z.gradients - static_cast<int64_t>(dtype) * numel;  // the compute-dtype .grad: not yet
    m.optimizer = z.optimizer;

    // Activations: 1F1B keeps pp - s micro-batches in flight on stage s (one without pp).
    m.micro_batches_in_flight = static_cast<int>(std::min<int64_t>(pp - s, accumulation));
    const StageActivations a = stage_activations(config, plan[s], micro_batch, dtype, tp, frozen);
    m.activations = m.micro_batches_in_flight * a.saved;
    int64_t forward_end = 0;
    if (s == pp - 1) {
      // The final norm's input, the head's saved gradients of h (per token) and of W (its
      // float32 accumulator, kept until the backward).
      m.activations += tokens * model::head_activation_bytes(c, dtype) + vocab_local * c.dim * 4;
      // During the head's forward: one chunk of logits; under tp (ATen's path on the slice,
      // not the fused kernel: linear_cross_entropy.h) also its float32 copy.
      const int64_t chunk = model::linear_cross_entropy_chunk_rows(tokens, vocab_local, true);
      const int64_t copy = tp > 1 && dtype < 4 ? 4 : 0;
      forward_end = chunk * vocab_local * (dtype + copy);
    }
    m.buffers = std::max(forward_end, a.transient);
    estimate.stages.push_back(m);
  }
  return estimate;
}

common::Json stage_memory_json(const StageMemory& m) {
  common::Json row = common::Json::object();
  row["stage"] = m.stage;
  row["weights"] = m.weights;
  row["gradients"] = m.gradients;
  row["optimizer"] = m.optimizer;
  row["activations"] = m.activations;
  row["buffers"] = m.buffers;
  row["micro_batches_in_flight"] = m.micro_batches_in_flight;
  row["peak"] = m.peak();
  return row;
}

common::Json memory_estimate_json(const MemoryEstimate& e) {
  common::Json stages = common::Json::array();
  for (const auto& m : e.stages) stages.push(stage_memory_json(m));
  common::Json out = common::Json::object();
  out["micro_batch"] = e.micro_batch;
  out["peak_bytes"] = e.worst().peak();
  out["stages"] = stages;
  return out;
}

}  // namespace hydra::train
