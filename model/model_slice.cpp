#include "model/model_slice.h"

#include <algorithm>

#include "common/errors.h"
#include "model/dims.h"

namespace hydra::model {

ModelSlice make_model_slice(const ModelConfig& c, const StageLayers& stage, int tp_size, int tp_rank,
                            int padding_tp) {
  ModelSlice s;
  const int total_layers = static_cast<int>(c.pattern.size()) * c.macro_blocks;
  s.first_layer = stage.first;
  s.end_layer = stage.end < 0 ? total_layers : stage.end;
  HYDRA_CHECK(0 <= s.first_layer && s.first_layer < s.end_layer && s.end_layer <= total_layers,
              "ModelOptions: stage layers [" << s.first_layer << ", " << s.end_layer << ") of " << total_layers);
  s.first_stage = s.first_layer == 0;
  s.last_stage = s.end_layer == total_layers;
  s.vocab_padded = padded_vocab(c.vocab_size, padding_tp);
  s.vocab_local = s.vocab_padded / tp_size;
  s.vocab_begin = s.vocab_local * tp_rank;
  s.vocab_drawn = padded_vocab(c.vocab_size, 1);
  return s;
}

int ModelSlice::block_first(int block, int per_block) const { return std::max(first_layer - block * per_block, 0); }

int ModelSlice::block_end(int block, int per_block) const {
  return std::min(end_layer - block * per_block, per_block);
}

int64_t ModelSlice::vocab_rows_kept() const {
  return std::max<int64_t>(0, std::min(vocab_begin + vocab_local, vocab_drawn) - vocab_begin);
}

}  // namespace hydra::model
