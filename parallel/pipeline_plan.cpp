#include "parallel/pipeline_plan.h"

#include <algorithm>
#include <limits>

#include "common/errors.h"
#include "model/dims.h"
#include "model/model_info.h"

namespace hydra::parallel {
namespace {

using common::ConfigError;

// The unit a stage boundary may fall after: one layer, or one macro-block with MoR on.
int unit_layers(const model::ModelConfig& c) {
  return c.mor.recursions > 1 ? static_cast<int>(c.pattern.size()) : 1;
}

int total_layers(const model::ModelConfig& c) { return static_cast<int>(c.pattern.size()) * c.macro_blocks; }

// Parameters of global layer `layer`, with its macro-block's MoR routers counted on the
// block's first layer.
int64_t params_of_layer(const model::ModelConfig& c, int layer) {
  const int per_block = static_cast<int>(c.pattern.size());
  const int position = layer % per_block;
  int64_t p = model::layer_params(c, position);
  if (position == 0) p += static_cast<int64_t>(c.mor.recursions - 1) * (c.dim + 1);
  return p;
}

// What the first stage holds besides its layers (the embedding) and what the last one does
// (the final norm, and the head or the tied embedding's copy).
int64_t first_stage_extra(const model::ModelConfig& c) { return model::padded_vocab(c.vocab_size, 1) * c.dim; }
int64_t last_stage_extra(const model::ModelConfig& c) { return c.dim + first_stage_extra(c); }

std::vector<model::StageLayers> from_counts(const std::vector<int>& counts) {
  std::vector<model::StageLayers> plan;
  int first = 0;
  for (int n : counts) {
    plan.push_back({first, first + n});
    first += n;
  }
  return plan;
}

std::vector<model::StageLayers> configured_plan(const model::ModelConfig& c, int stages, const std::vector<int>& counts) {
  const int total = total_layers(c);
  if (static_cast<int>(counts.size()) != stages) {
    HYDRA_FAIL(ConfigError, "parallel.pp_layers has " << counts.size() << " entries; parallel.pp is " << stages
                                                      << " (one layer count per stage)");
  }
  int sum = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (counts[s] < 1) HYDRA_FAIL(ConfigError, "parallel.pp_layers[" << s << "] = " << counts[s] << ": every stage needs a layer");
    if (counts[s] % unit_layers(c) != 0) {
      HYDRA_FAIL(ConfigError, "parallel.pp_layers[" << s << "] = " << counts[s] << " is not a multiple of the "
                                                    << unit_layers(c) << " layers of a macro-block: with MoR on "
                                                    << "(model.mor.recursions " << c.mor.recursions
                                                    << ") stages hold whole macro-blocks");
    }
    sum += counts[s];
  }
  if (sum != total) {
    HYDRA_FAIL(ConfigError, "parallel.pp_layers sums to " << sum << " layers; the model has " << total << " ("
                                                          << c.macro_blocks << " macro-blocks x " << c.pattern.size()
                                                          << ")");
  }
  return from_counts(counts);
}

// Contiguous split of the units into `stages` non-empty parts minimising the largest part,
// the first part also carrying `first_extra` and the last `last_extra` parameters. Exact
// dynamic programme: cost[k][i] = the best largest part when the first i units form k parts.
std::vector<int> balanced_counts(const std::vector<int64_t>& unit_params, int stages, int64_t first_extra,
                                 int64_t last_extra) {
  const int n = static_cast<int>(unit_params.size());
  std::vector<int64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + unit_params[i];
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> cost(stages + 1, std::vector<int64_t>(n + 1, kNone));
  std::vector<std::vector<int>> cut(stages + 1, std::vector<int>(n + 1, 0));
  cost[0][0] = 0;
  for (int k = 1; k <= stages; ++k) {
    for (int i = k; i <= n; ++i) {
      for (int j = k - 1; j < i; ++j) {  // part k holds units [j, i)
        if (cost[k - 1][j] == kNone) continue;
        int64_t part = prefix[i] - prefix[j];
        if (k == 1) part += first_extra;
        if (k == stages && i == n) part += last_extra;
        const int64_t worst = std::max(cost[k - 1][j], part);
        if (worst < cost[k][i]) cost[k][i] = worst, cut[k][i] = j;
      }
    }
  }
  std::vector<int> counts(stages);
  for (int k = stages, i = n; k >= 1; --k) {
    counts[k - 1] = i - cut[k][i];
    i = cut[k][i];
  }
  return counts;
}

}  // namespace

std::vector<int64_t> stage_params(const model::ModelConfig& c, const std::vector<model::StageLayers>& plan) {
  std::vector<int64_t> out;
  for (size_t s = 0; s < plan.size(); ++s) {
    int64_t p = 0;
    for (int l = plan[s].first; l < plan[s].end; ++l) p += params_of_layer(c, l);
    if (s == 0) p += first_stage_extra(c);
    if (s + 1 == plan.size()) p += last_stage_extra(c);
    // One stage holds a tied embedding once: the head is the embedding itself, not a copy.
    if (plan.size() == 1 && c.tie_embeddings) p -= first_stage_extra(c);
    out.push_back(p);
  }
  return out;
}

std::vector<model::StageLayers> plan_pipeline_stages(const model::ModelConfig& c, int stages,
                                                     const std::vector<int>& layers_per_stage) {
  if (stages < 1) HYDRA_FAIL(ConfigError, "parallel.pp " << stages << " must be at least 1");
  if (!layers_per_stage.empty()) return configured_plan(c, stages, layers_per_stage);
  const int unit = unit_layers(c);
  const int units = total_layers(c) / unit;
  if (stages > units) {
    if (unit > 1) {
      HYDRA_FAIL(ConfigError, "parallel.pp " << stages << " exceeds the " << units << " macro-blocks of the model: "
                                             << "with MoR on (model.mor.recursions " << c.mor.recursions
                                             << ") a stage holds whole macro-blocks");
    }
    HYDRA_FAIL(ConfigError, "parallel.pp " << stages << " exceeds the " << units << " layers of the model");
  }
  std::vector<int64_t> unit_params(units, 0);
  for (int l = 0; l < total_layers(c); ++l) unit_params[l / unit] += params_of_layer(c, l);
  std::vector<int> counts = balanced_counts(unit_params, stages, first_stage_extra(c), last_stage_extra(c));
  for (int& n : counts) n *= unit;
  return from_counts(counts);
}

}  // namespace hydra::parallel
