#include "launcher/config_schema.h"

#include <cmath>

#include "common/json.h"

namespace hydra::launcher {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The member a key binds to; a captureless lambda converts to the function pointer.
#define HYDRA_FIELD(member) [](Config& c) -> FieldRef { return &c.member; }

std::vector<KeySpec> build_schema() {
  const std::vector<std::string> attention_types = {"mqa", "gqa", "mha", "ccqa", "mla"};
  return {
      // model: docs/MODEL.md. Sizes are required unless a preset provides them.
      {"model.preset", HYDRA_FIELD(model.preset), -kInf, kInf, {}, false,
       "variant name in configs/ whose model section is the base"},
      {"model.dim", HYDRA_FIELD(model.dim), 8, 65536, {}, true, "model width E"},
      {"model.heads", HYDRA_FIELD(model.heads), 1, 1024, {}, true, "query heads H"},
      {"model.kv_heads", HYDRA_FIELD(model.kv_heads), 1, 1024, {}, true, "key/value heads of CCQA and GQA layers"},
      {"model.mlp_ratio", HYDRA_FIELD(model.mlp_ratio), 0.25, 64, {}, false, "SwiGLU width / E"},
      {"model.macro_blocks", HYDRA_FIELD(model.macro_blocks), 1, 1024, {}, true,
       "number of macro-blocks"},
      {"model.pattern", HYDRA_FIELD(model.pattern), -kInf, kInf, attention_types, false,
       "attention type of each layer of a macro-block"},
      {"model.vocab_size", HYDRA_FIELD(model.vocab_size), 2, 1 << 24, {}, true,
       "vocabulary before padding"},
      {"model.tie_embeddings", HYDRA_FIELD(model.tie_embeddings)},
      {"model.init_std", HYDRA_FIELD(model.init_std), 0, 1},
      {"model.rope_theta", HYDRA_FIELD(model.rope_theta), 1, 1e9},
      {"model.norm_eps", HYDRA_FIELD(model.norm_eps), 0, 1},
      {"model.mqa.residual_scale", HYDRA_FIELD(model.mqa.residual_scale), 0, 4, {}, false, "alpha of MQA layers"},
      {"model.gqa.residual_scale", HYDRA_FIELD(model.gqa.residual_scale), 0, 4, {}, false,
       "alpha of GQA and MHA layers"},
      {"model.ccqa.residual_scale", HYDRA_FIELD(model.ccqa.residual_scale), 0, 4, {}, false, "alpha of CCQA layers"},
      {"model.mla.residual_scale", HYDRA_FIELD(model.mla.residual_scale), 0, 4, {}, false, "alpha of MLA layers"},
      {"model.ccqa.compression", HYDRA_FIELD(model.ccqa.compression), 2, 8},
      {"model.ccqa.compress", HYDRA_FIELD(model.ccqa.compress), -kInf, kInf, {"head_dim", "heads"}, false,
       "what compression divides: the head size, or the number of heads"},
      {"model.ccqa.conv_kernel", HYDRA_FIELD(model.ccqa.conv_kernel), 1, 16},
      {"model.ccqa.use_convs", HYDRA_FIELD(model.ccqa.use_convs)},
      {"model.ccqa.qk_mean", HYDRA_FIELD(model.ccqa.qk_mean)},
      {"model.ccqa.qk_mean_gain", HYDRA_FIELD(model.ccqa.qk_mean_gain), 0, 16},
      {"model.ccqa.value_shift", HYDRA_FIELD(model.ccqa.value_shift)},
      {"model.ccqa.post_mix_norm", HYDRA_FIELD(model.ccqa.post_mix_norm)},
      {"model.ccqa.kernel", HYDRA_FIELD(model.ccqa.kernel), -kInf, kInf, {"fused", "reference"}},
      {"model.mla.latent_ratio", HYDRA_FIELD(model.mla.latent_ratio), 0.0625, 1},
      {"model.mod.enabled", HYDRA_FIELD(model.mod.enabled)},
      {"model.mod.capacity", HYDRA_FIELD(model.mod.capacity), 0.01, 1},
      {"model.mod.layers", HYDRA_FIELD(model.mod.layers), 0, 1023},
      {"model.mod.aux_weight", HYDRA_FIELD(model.mod.aux_weight), 0, 100},
      {"model.mor.recursions", HYDRA_FIELD(model.mor.recursions), 1, 16},
      {"model.mor.aux_weight", HYDRA_FIELD(model.mor.aux_weight), 0, 100},

      // parallel
      {"parallel.dp", HYDRA_FIELD(parallel.dp), 0, 1 << 20, {}, false,
       "data-parallel size; 0: world / (tp * pp)"},
      {"parallel.tp", HYDRA_FIELD(parallel.tp), 1, 1024},
      {"parallel.pp", HYDRA_FIELD(parallel.pp), 1, 1024},
      {"parallel.zero_stage", HYDRA_FIELD(parallel.zero_stage), 0, 2},
      {"parallel.micro_batches", HYDRA_FIELD(parallel.micro_batches), 1, 1 << 16},
      {"parallel.pp_layers", HYDRA_FIELD(parallel.pp_layers), 1, 1 << 16, {}, false,
       "layers of each pipeline stage; empty: balanced by parameter count"},
      {"parallel.sequence_parallel", HYDRA_FIELD(parallel.sequence_parallel)},
      {"parallel.overlap_grad_reduce", HYDRA_FIELD(parallel.overlap_grad_reduce), 0, 1, {}, false,
       "reduce each gradient bucket during backward, as soon as it is complete"},
      {"parallel.bucket_mb", HYDRA_FIELD(parallel.bucket_mb), 0.001, 1 << 20, {}, false,
       "MiB of fp32 gradient per reduction bucket (whole parameters; a larger one is a bucket of its own)"},
      {"parallel.backend", HYDRA_FIELD(parallel.backend), -kInf, kInf, {"auto", "mpi", "nccl"}},
      {"parallel.timeout_s", HYDRA_FIELD(parallel.timeout_s), 0.1, 86400, {}, false,
       "seconds before a collective that has not completed stops the run (exit 4)"},

      // train
      {"train.steps", HYDRA_FIELD(train.steps), 0, 1e9},
      {"train.global_batch", HYDRA_FIELD(train.global_batch), 1, 1 << 24},
      {"train.micro_batch", HYDRA_FIELD(train.micro_batch), 0, 1 << 20, {}, false,
       "sequences per forward; 0: global_batch / (dp * micro_batches)"},
      {"train.seq_len", HYDRA_FIELD(train.seq_len), 1, 1 << 22},
      {"train.lr", HYDRA_FIELD(train.lr), 0, 10},
      {"train.min_lr", HYDRA_FIELD(train.min_lr), 0, 10},
      {"train.warmup_steps", HYDRA_FIELD(train.warmup_steps), 0, 1e9},
      {"train.weight_decay", HYDRA_FIELD(train.weight_decay), 0, 10},
      {"train.beta1", HYDRA_FIELD(train.beta1), 0, 0.999999},
      {"train.beta2", HYDRA_FIELD(train.beta2), 0, 0.999999999},
      {"train.eps", HYDRA_FIELD(train.eps), 0, 1},
      {"train.clip", HYDRA_FIELD(train.clip), 0, 1e6, {}, false, "global gradient norm; 0: off"},
      {"train.seed", HYDRA_FIELD(train.seed), 0, 2147483647},
      {"train.dtype", HYDRA_FIELD(train.dtype), -kInf, kInf, {"fp32", "bf16"}},
      {"train.device", HYDRA_FIELD(train.device), -kInf, kInf, {"cpu", "cuda"}},
      {"train.on_nonfinite", HYDRA_FIELD(train.on_nonfinite), -kInf, kInf, {"skip", "halt"}},
      {"train.activation_checkpointing", HYDRA_FIELD(train.activation_checkpointing), -kInf, kInf,
       {"none", "mlp", "layer", "block"}, false,
       "recompute in backward instead of keeping: mlp (each layer's MLP), layer, block; hydra info prints the memory of each"},
      {"train.stop_at_step", HYDRA_FIELD(train.stop_at_step), 0, 1e9, {}, false,
       "stop with a checkpoint at this step, schedule unchanged; 0: run to train.steps"},
      {"train.inject_nonfinite_step", HYDRA_FIELD(train.inject_nonfinite_step), 0, 1e9, {}, false,
       "testing aid: rank 0's loss of this step is made NaN, to exercise train.on_nonfinite; 0: off"},
      {"train.eval_every", HYDRA_FIELD(train.eval_every), 0, 1e9},
      {"train.eval_batches", HYDRA_FIELD(train.eval_batches), 1, 1e6},
      {"train.peak_tflops", HYDRA_FIELD(train.peak_tflops), 0, 1e6},
      {"train.cuda_graphs", HYDRA_FIELD(train.cuda_graphs), -kInf, kInf, {"auto", "on", "off"}, false,
       "capture the training step in a CUDA graph and replay it (one GPU, no parallelism yet); auto: where it can"},
      {"train.freeze", HYDRA_FIELD(train.freeze), -kInf, kInf, {}, false,
       "parameter-name patterns (* matches any run of characters) whose parameters do not train"},

      // data
      {"data.path", HYDRA_FIELD(data.path)},
      {"data.tokenizer", HYDRA_FIELD(data.tokenizer), -kInf, kInf, {"gpt2", "bytes"}},

      // checkpoint
      {"checkpoint.dir", HYDRA_FIELD(checkpoint.dir)},
      {"checkpoint.every", HYDRA_FIELD(checkpoint.every), 0, 1e9},
      {"checkpoint.keep", HYDRA_FIELD(checkpoint.keep), 1, 1e6},
      {"checkpoint.async", HYDRA_FIELD(checkpoint.async)},

      // log
      {"log.every", HYDRA_FIELD(log.every), 1, 1e9},
      {"log.jsonl", HYDRA_FIELD(log.jsonl)},
      {"log.level", HYDRA_FIELD(log.level), -kInf, kInf,
       {"trace", "debug", "info", "warn", "error"}},
      {"log.all_ranks", HYDRA_FIELD(log.all_ranks)},
  };
}

#undef HYDRA_FIELD

// An integer key's bound as an integer (1000000000, not 1e+09); a number's exactly
// (0.999999999, not 1).
std::string format_bound(double v, bool integer) {
  if (!std::isfinite(v)) return v < 0 ? "-inf" : "inf";
  return integer ? std::to_string(static_cast<long long>(v)) : common::format_float(v);
}

}  // namespace

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> schema = build_schema();
  return schema;
}

const KeySpec* find_key(const std::string& path) {
  for (const auto& spec : config_schema()) {
    if (path == spec.path) return &spec;
  }
  return nullptr;
}

std::string describe_expected(const KeySpec& spec) {
  Config probe;
  const FieldRef ref = spec.field(probe);
  const bool integer = ref.index() == 0 || ref.index() == 4;  // int, list of int
  std::string range;
  if (std::isfinite(spec.min) || std::isfinite(spec.max)) {
    range = " in [" + format_bound(spec.min, integer) + ", " + format_bound(spec.max, integer) + "]";
  }
  std::string choices;
  for (const auto& c : spec.choices) choices += (choices.empty() ? "" : "|") + c;
  switch (ref.index()) {
    case 0: return "an integer" + range;
    case 1: return "a number" + range;
    case 2: return "true or false";
    case 3: return choices.empty() ? "a string" : "one of " + choices;
    case 4: return "a list of integers" + range;
    case 5: return choices.empty() ? "a list of strings" : "a list of " + choices;
  }
  return "?";
}

}  // namespace hydra::launcher
