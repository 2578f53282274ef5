// Choosing the next token from a model's logits (hydra generate): temperature, top-k and
// top-p (nucleus) filtering, then one draw. The draw inverts the cumulative distribution in
// float64 on the host with a uniform number from the caller's generator (one per token drawn at
// a temperature, even where the filters keep a single id), so a seed gives the
// same tokens on any device and build (the kept tokens by decreasing logit after a filter, all
// tokens in id order when nothing is filtered); temperature 0 is greedy (the first largest
// logit).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include <torch/types.h>

namespace hydra::model {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy; else logits / temperature
  int64_t top_k = 0;         // keep the k largest logits (0: all)
  double top_p = 1.0;        // keep the smallest set of largest probabilities summing to >= p (1: all)
};

// logits [V] (any dtype, any device). Among equal logits the lower id ranks first, so the
// filters and the greedy choice are deterministic.
int64_t sample_next_token(const torch::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

// The next token of each row of logits [N, V] (any dtype, any device: the arithmetic runs in
// float64 where the logits are), row i drawing with uniforms[i] (none needed when greedy): what
// sample_next_token chooses when its generator's next uniform is uniforms[i], up to the
// rounding of a running sum (a GPU's parallel scan). One copy of N ids to the host: on a GPU
// the logits stay there (hydra generate's batch).
std::vector<int64_t> sample_rows(const torch::Tensor& logits, const SamplingOptions& options,
                                 const std::vector<double>& uniforms);

// The probabilities sample_next_token draws from, [V] float64 on the CPU (zeros where
// filtered out); greedy gives a one-hot vector. For tests and for reporting.
torch::Tensor sampling_distribution(const torch::Tensor& logits, const SamplingOptions& options);

}  // namespace hydra::model
