// "Did you mean ...?" for a misspelt name: config keys, sections and subcommands share this
// one suggestion rule.
#pragma once

#include <string>
#include <vector>

namespace hydra::launcher {

// The candidate nearest to `word` by edit distance when it is a near miss (at most 3 edits
// and half the word's length), else empty. Ties go to the first candidate.
std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates);

// " (did you mean NAME?)" for nearest_name, or empty: ready to append to a message.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace hydra::launcher
