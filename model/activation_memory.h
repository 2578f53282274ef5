// The bytes a training forward keeps for its backward, per token, counted from what each
// autograd node of the CUDA path saves (docs/MODEL.md, "Memory"): the peak-memory estimate of
// `hydra info` (train/memory_estimate.h) is built on it. Analytic, like model_info.h: no model
// is built. Counts are of the CUDA build's fused path (fused RMSNorm/RoPE/SwiGLU, the fused
// CCQA prologue and latent attention, FlashAttention for MQA/GQA/MHA and MLA, the chunked LM head).
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace hydra::model {

struct ActivationBytes {
  int64_t saved = 0;      // kept from the forward until the backward reaches the layer
  int64_t transient = 0;  // the largest extra the layer's backward holds at once
};

// One layer at `position` of the pattern, per token that passes through it, with elements of
// `dtype_bytes` (2: bf16, 4: fp32; norms' rstd and the attention's log-sum-exp are fp32) and
// the layer's heads and MLP split over `tp` ranks. A MoD router's input and gate are not
// included (mod_overhead_bytes).
ActivationBytes layer_activation_bytes(const ModelConfig& config, int position, int dtype_bytes, int tp = 1);

// What routing adds per routed token (MoD's and MoR's gate times (layer - input) keeps both
// factors); the router itself keeps its input, E elements per token it scores.
int64_t mod_overhead_bytes(const ModelConfig& config, int dtype_bytes);

// The final norm and the chunked LM head, per token (the saved gradient of the hidden state).
int64_t head_activation_bytes(const ModelConfig& config, int dtype_bytes);

}  // namespace hydra::model
