#include "train/batches.h"

#include <ATen/ATen.h>

#include "common/errors.h"
#include "data/loader.h"

namespace hydra::train {

BatchSource open_batches(const data::DataConfig& config, int seq_len, int seed) {
  auto dataset = std::make_shared<const data::TokenDataset>(config.path, config.tokenizer);
  auto train = std::make_shared<const data::TrainData>(dataset, seq_len, static_cast<uint64_t>(seed));
  const int64_t val_windows =
      dataset->tokens(data::Split::kVal) > 0 ? static_cast<int64_t>((dataset->tokens(data::Split::kVal) - 1) / seq_len) : 0;
  if (val_windows < 1) {
    HYDRA_FAIL(common::InputError, config.path << ": the validation split holds fewer than seq_len + 1 = "
                                               << seq_len + 1 << " tokens (prepare with a larger --val-fraction)");
  }
  BatchSource source;
  source.vocab_size = dataset->manifest().vocab_size;
  source.train = [train](int64_t first, int count, const at::TensorOptions& device) {
    data::Batch b = train->samples(first, count);
    return Batch{b.inputs.to(device.device()), b.targets.to(device.device())};
  };
  // Validation batch j is windows [j*count, (j+1)*count) in stream order; a small validation
  // split wraps around, so evaluation always sees full batches.
  source.validation = [dataset, seq_len, val_windows](int index, int count, const at::TensorOptions& device) {
    at::Tensor rows = at::empty({count, seq_len + 1}, at::kLong);
    for (int i = 0; i < count; ++i) {
      const int64_t window = (static_cast<int64_t>(index) * count + i) % val_windows;
      dataset->read(data::Split::kVal, static_cast<uint64_t>(window * seq_len), static_cast<uint64_t>(seq_len + 1),
                    rows[i].data_ptr<int64_t>());
    }
    return Batch{rows.narrow(1, 0, seq_len).contiguous().to(device.device()),
                 rows.narrow(1, 1, seq_len).contiguous().to(device.device())};
  };
  return source;
}

}  // namespace hydra::train
