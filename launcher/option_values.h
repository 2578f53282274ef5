// Values of command-line options that are lists or numbers (--batches 1,4,8, --sizes 4K,1M,
// --steps 20): one parser for every command, so that they all accept and refuse the same.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace hydra::launcher {

// "a,b,c" -> {"a", "b", "c"}; an empty item stays (for the caller to refuse).
std::vector<std::string> split_list(const std::string& text);

// The whole of `text` as a base-10 integer; nullopt for anything else ("", "4x", "1e3").
std::optional<long long> whole_number(const std::string& text);

}  // namespace hydra::launcher
