#include "model/model_info.h"

namespace hydra::model {

ModelStats compute_model_stats(const ModelConfig& config, int /*seq_len*/, int tp) {
  ModelStats s;
  const int64_t multiple = 128LL * tp;
  s.vocab_padded = (config.vocab_size + multiple - 1) / multiple * multiple;
  s.effective_layers = static_cast<int>(config.pattern.size()) * config.macro_blocks *
                       config.mor.recursions;
  return s;  // parameter and FLOP counts arrive with the model issue
}

}  // namespace hydra::model
