// Values of command-line options that are lists or numbers (--batches 1,4,8, --sizes 4K,1M,
// --steps 20): one parser for every command, so that they all accept and refuse the same.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hydra::launcher {

// "a,b,c" -> {"a", "b", "c"}; an empty item stays (for the caller to refuse).
std::vector<std::string> split_list(const std::string& text);

// The whole of `text` as a base-10 integer; nullopt for anything else ("", "4x", "1e3").
std::optional<long long> whole_number(const std::string& text);

// "1,4,8": positive whole numbers; ConfigError naming `option`, the item and the list otherwise.
// Empty text: `fallback`.
std::vector<int64_t> positive_list(const std::string& option, const std::string& text, std::vector<int64_t> fallback);

// --steps N and the like: a whole number of at least `least` (and at most INT32_MAX);
// ConfigError naming `option` otherwise. Empty text: `fallback`.
int count_option(const std::string& option, const std::string& text, int fallback, int least);

// --temperature 0.7 and the like: the whole of `text` as a finite real number in [least, most];
// ConfigError naming `option` and the value otherwise. Empty text: `fallback`.
double real_option(const std::string& option, const std::string& text, double fallback, double least, double most);

}  // namespace hydra::launcher
