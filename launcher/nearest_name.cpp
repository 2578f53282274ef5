#include "launcher/nearest_name.h"

#include <algorithm>

namespace hydra::launcher {
namespace {

// Levenshtein distance with one row.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates) {
  // Near misses only: up to 3 edits, and at most half the word (no "null" for "nope").
  const std::string* best = nullptr;
  size_t best_distance = std::min<size_t>(3, std::max<size_t>(2, word.size() / 2)) + 1;
  for (const auto& candidate : candidates) {
    const size_t d = edit_distance(word, candidate);
    if (d < best_distance) best_distance = d, best = &candidate;
  }
  return best ? *best : std::string();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string best = nearest_name(word, candidates);
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

}  // namespace hydra::launcher
