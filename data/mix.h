// SplitMix64 (Steele, Lea, Flood 2014): a fast 64-bit mixing function. data/ uses it where a
// reproducible pseudo-random choice must be a pure function of its inputs (the train/val
// split, the sample order), never a stateful generator.
#pragma once

#include <cstdint>

namespace hydra::data {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A uniform double in [0, 1) from a 64-bit hash.
inline double unit_interval(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

}  // namespace hydra::data
