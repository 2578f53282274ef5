#include "data/sample_order.h"

#include "common/errors.h"
#include "data/mix.h"

namespace hydra::data {

SampleOrder::SampleOrder(uint64_t windows, uint64_t seed) : windows_(windows), seed_(seed) {
  HYDRA_CHECK(windows >= 1, "SampleOrder needs at least one window");
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < windows) bits += 2;
  half_bits_ = bits / 2;
}

uint64_t SampleOrder::window_of(uint64_t sample) const {
  return permute(sample / windows_, sample % windows_);
}

uint64_t SampleOrder::permute(uint64_t epoch, uint64_t position) const {
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  const uint64_t epoch_key = splitmix64(seed_ ^ splitmix64(epoch + 0x243F6A8885A308D3ULL));
  uint64_t x = position;
  do {  // cycle walking: values outside [0, windows) are permuted again
    uint64_t left = x >> half_bits_, right = x & mask;
    for (int r = 0; r < kRounds; ++r) {
      const uint64_t f = splitmix64(right ^ splitmix64(epoch_key + static_cast<uint64_t>(r))) & mask;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half_bits_) | right;
  } while (x >= windows_);
  return x;
}

}  // namespace hydra::data
