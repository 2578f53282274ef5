#include "train/frozen_params.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>

#include "common/errors.h"
#include "common/logging.h"
#include "model/sharding.h"

namespace hydra::train {
namespace {

// The whole parameter's elements as checkpoints store it: vocabulary padding left out, so
// the count is the same at every tp size.
int64_t whole_elements(const model::ShardInfo& shard) {
  int64_t n = 1;
  for (size_t d = 0; d < shard.global_shape.size(); ++d) {
    const int64_t size = d == 0 && shard.valid_rows >= 0 ? std::min(shard.global_shape[0], shard.valid_rows)
                                                         : shard.global_shape[d];
    n *= size;
  }
  return n;
}

std::string millions(int64_t n) {
  std::ostringstream out;
  out.precision(3);
  out << n / 1e6 << "M";
  return out.str();
}

}  // namespace

bool is_frozen(const std::vector<std::string>& patterns, const std::string& name) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return glob_matches(p, name); });
}

bool glob_matches(const std::string& pattern, const std::string& name) {
  // Greedy with one backtrack point: after a `*`, a mismatch retries the pattern's rest one
  // character further into the name. Linear in practice, never exponential.
  size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p, ++n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

FreezeCounts count_frozen(const std::vector<std::string>& patterns, const std::vector<ParamCount>& params) {
  FreezeCounts c;
  c.matches.assign(patterns.size(), 0);
  for (const ParamCount& param : params) {
    if (!param.counted) continue;
    bool frozen = false;
    for (size_t i = 0; i < patterns.size(); ++i) {
      if (glob_matches(patterns[i], param.name)) ++c.matches[i], frozen = true;
    }
    (frozen ? c.frozen_tensors : c.trainable_tensors) += 1;
    (frozen ? c.frozen_elements : c.trainable_elements) += param.elements;
  }
  return c;
}

void check_freeze(const std::string& source, const std::vector<std::string>& patterns, const FreezeCounts& whole,
                  int empty_stage) {
  const std::string where = source.empty() ? "" : source + ": ";
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (whole.matches.at(i) > 0) continue;
    HYDRA_FAIL(common::ConfigError,
               where << "train.freeze: pattern '" << patterns[i] << "' matches no parameter of the model (names are "
                     << "like embed.weight, blocks.0.layers.1.attn.wq.weight, final_norm.weight, head.weight; `*` "
                     << "matches any run of characters; docs/MODEL.md \"Parameters\" lists them)");
  }
  if (!patterns.empty() && whole.trainable_tensors == 0) {
    HYDRA_FAIL(common::ConfigError, where << "train.freeze: the patterns freeze all " << whole.frozen_tensors
                                          << " parameters of the model; nothing would train (leave some out)");
  }
  if (empty_stage >= 0) {
    HYDRA_FAIL(common::ConfigError, where << "train.freeze freezes every parameter of pipeline stage " << empty_stage
                                          << "; a stage needs one to train (use fewer stages, parallel.pp, or "
                                          << "parallel.pp_layers to move trainable layers onto it)");
  }
}

FreezeCounts freeze_parameters(const std::string& source, const std::vector<std::string>& patterns,
                               model::HydraModelImpl& model, parallel::ParallelContext& ctx,
                               const at::TensorOptions& device) {
  std::vector<ParamCount> held;
  int64_t trainable_here = 0;  // tensors this rank trains (the tied copy included)
  for (auto& item : model.named_parameters()) {
    const model::ParamPlacement& placed = model::placement_of(model.placements, item.key());
    held.push_back({item.key(), whole_elements(placed.shard), !placed.tied_copy});
    if (is_frozen(patterns, item.key())) {
      item.value().set_requires_grad(false);
    } else {
      ++trainable_here;
    }
  }
  FreezeCounts counts = count_frozen(patterns, held);
  if (ctx.grid.shape.pp > 1) {  // each stage counted its own parameters: the sum is the model's
    std::vector<double> packed(counts.matches.begin(), counts.matches.end());
    packed.insert(packed.end(), {static_cast<double>(counts.frozen_tensors), static_cast<double>(counts.trainable_tensors),
                                 static_cast<double>(counts.frozen_elements),
                                 static_cast<double>(counts.trainable_elements)});
    at::Tensor sums = at::tensor(packed, at::TensorOptions().dtype(at::kDouble)).to(device.dtype(at::kDouble));
    ctx.pp->all_reduce(sums, parallel::ReduceOp::kSum);
    sums = sums.cpu();
    const auto* v = sums.data_ptr<double>();
    const size_t k = patterns.size();
    for (size_t i = 0; i < k; ++i) counts.matches[i] = static_cast<int64_t>(v[i]);
    counts.frozen_tensors = static_cast<int64_t>(v[k]);
    counts.trainable_tensors = static_cast<int64_t>(v[k + 1]);
    counts.frozen_elements = static_cast<int64_t>(v[k + 2]);
    counts.trainable_elements = static_cast<int64_t>(v[k + 3]);
  }
  // The first stage with nothing to train (each stage raises its index where it has none).
  int empty_stage = -1;
  if (ctx.grid.shape.pp > 1) {
    const int stages = ctx.grid.shape.pp;
    const double mine = trainable_here == 0 ? static_cast<double>(stages - ctx.grid.coord.pp) : 0.0;
    at::Tensor flag = at::full({1}, mine, device.dtype(at::kDouble));
    ctx.pp->all_reduce(flag, parallel::ReduceOp::kMax);
    const double top = flag.cpu().item<double>();
    if (top > 0) empty_stage = stages - static_cast<int>(top);
  }
  check_freeze(source, patterns, counts, empty_stage);
  const int64_t total = counts.frozen_elements + counts.trainable_elements;
  if (patterns.empty()) {
    common::log_info("parameters: %lld trainable (%s), 0 frozen", static_cast<long long>(total), millions(total).c_str());
    return counts;
  }
  std::string per_pattern;
  for (size_t i = 0; i < patterns.size(); ++i) {
    per_pattern += (i ? ", " : "") + patterns[i] + ": " + std::to_string(counts.matches[i]);
  }
  common::log_info("parameters: %lld trainable (%s in %lld tensors), %lld frozen (%s in %lld tensors) of %s; "
                   "train.freeze matched %s",
                   static_cast<long long>(counts.trainable_elements), millions(counts.trainable_elements).c_str(),
                   static_cast<long long>(counts.trainable_tensors), static_cast<long long>(counts.frozen_elements),
                   millions(counts.frozen_elements).c_str(), static_cast<long long>(counts.frozen_tensors),
                   millions(total).c_str(), per_pattern.c_str());
  return counts;
}

}  // namespace hydra::train
