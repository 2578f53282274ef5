#include "data/batch_split.h"

#include "common/errors.h"

namespace hydra::data {

BatchSplit make_batch_split(int64_t global_batch, int64_t micro_batch, int dp_size, int dp_rank) {
  using common::ConfigError;
  HYDRA_CHECK(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
              "data: dp rank " << dp_rank << " of dp size " << dp_size << " is out of range");
  if (global_batch < 1 || global_batch % dp_size != 0) {
    HYDRA_FAIL(ConfigError, "train.global_batch " << global_batch << " is not divisible by the " << dp_size
                                                  << " data-parallel ranks");
  }
  const int64_t per_rank = global_batch / dp_size;
  if (micro_batch < 1 || per_rank % micro_batch != 0) {
    HYDRA_FAIL(ConfigError, "train.micro_batch " << micro_batch << " must divide the " << per_rank
                                                 << " sequences each data-parallel rank takes per step"
                                                 << " (train.global_batch / dp)");
  }
  return BatchSplit{global_batch, micro_batch, dp_size, dp_rank};
}

int64_t micro_batches(const BatchSplit& split) { return split.global_batch / (split.dp_size * split.micro_batch); }

int64_t first_sample(const BatchSplit& split, int64_t batch_start, int64_t micro) {
  HYDRA_CHECK(micro >= 0 && micro < micro_batches(split),
              "micro-batch " << micro << " of " << micro_batches(split) << " per global batch");
  return batch_start + (micro * split.dp_size + split.dp_rank) * split.micro_batch;
}

}  // namespace hydra::data
