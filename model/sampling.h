// Choosing the next token from a model's logits (hydra generate): temperature, top-k and
// top-p (nucleus) filtering, then one draw. The draw inverts the cumulative distribution in
// float64 on the host with a uniform number from the caller's generator, so a seed gives the
// same tokens on any device and build (the kept tokens by decreasing logit after a filter, all
// tokens in id order when nothing is filtered); temperature 0 is greedy (the first largest
// logit).
#pragma once

#include <cstdint>
#include <random>

#include <torch/torch.h>

namespace hydra::model {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy; else logits / temperature
  int64_t top_k = 0;         // keep the k largest logits (0: all)
  double top_p = 1.0;        // keep the smallest set of largest probabilities summing to >= p (1: all)
};

// logits [V] (any dtype, any device). Among equal logits the lower id ranks first, so the
// filters and the greedy choice are deterministic.
int64_t sample_next_token(const torch::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

// The probabilities sample_next_token draws from, [V] float64 on the CPU (zeros where
// filtered out); greedy gives a one-hot vector. For tests and for reporting.
torch::Tensor sampling_distribution(const torch::Tensor& logits, const SamplingOptions& options);

}  // namespace hydra::model
