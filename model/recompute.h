// Activation checkpointing: LibTorch's C++ API has none, so this is a recompute autograd
// Function. Forward runs fn(x) without keeping its activations (grad off); backward re-runs
// fn on a detached copy of x with grad on, under the RNG and autocast state of the first run,
// and back-propagates through the recomputed graph. Parameter gradients accumulate during
// that inner backward (reentrant), so train with loss.backward(), not autograd::grad on
// parameters.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

namespace hydra::model {

// kMlp recomputes each layer's MLP only (its gate, up and SwiGLU outputs are most of a layer's
// activations, and cheap elementwise work beside its three matmuls); kLayer each whole layer;
// kBlock each macro-block pass.
enum class Checkpointing { kNone, kMlp, kLayer, kBlock };

// "none" | "mlp" | "layer" | "block" (train.activation_checkpointing); ConfigError otherwise.
Checkpointing parse_checkpointing(const std::string& mode);

// fn(x, first_pass) returns the outputs; first_pass is false on the recompute, where side
// effects (routing statistics) must not repeat.
using RecomputeFn = std::function<std::vector<at::Tensor>(const at::Tensor& x, bool first_pass)>;

// Outside grad mode this is fn(x, true). Otherwise x must be the only tensor input that needs
// a gradient (parameters are reached through fn: those of `segment`, the module fn runs). If x
// does not require grad, a detached copy that does is used, so that backward still reaches the
// parameters inside fn; unless no parameter of `segment` requires grad either (train.freeze
// froze them all), when nothing needs a gradient and fn(x, true) runs once, recording nothing,
// as without recompute. (The parameters are looked at only then: in training x needs a gradient.)
std::vector<at::Tensor> checkpointed(const at::Tensor& x, RecomputeFn fn, const torch::nn::Module& segment);

}  // namespace hydra::model
