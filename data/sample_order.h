// Which window of the training stream a global sample index reads: the data order as a
// pure function of (seed, sample index), with no state to save beyond the index.
//
// The windows of an epoch are shuffled by a keyed permutation of [0, windows): a six-round
// Feistel network on the smallest even number of bits that covers `windows`, with cycle
// walking for values >= windows (so it is a bijection on exactly [0, windows)). Sample g
// belongs to epoch g / windows and reads window perm_epoch(g % windows); each epoch has its
// own keys, derived from (seed, epoch). Evaluating one index costs a few hashes: nothing is
// materialised, so any step of any epoch is reachable in O(1).
#pragma once

#include <cstdint>

namespace hydra::data {

class SampleOrder {
 public:
  SampleOrder(uint64_t windows, uint64_t seed);  // windows >= 1

  uint64_t windows() const { return windows_; }
  // The window that global sample `sample` reads.
  uint64_t window_of(uint64_t sample) const;
  // The permutation of one epoch: position -> window, a bijection on [0, windows).
  uint64_t permute(uint64_t epoch, uint64_t position) const;

 private:
  static constexpr int kRounds = 6;
  uint64_t windows_;
  uint64_t seed_;
  int half_bits_;  // each Feistel half has this many bits
};

}  // namespace hydra::data
