// Which part of the whole model one rank builds: the layers of its pipeline stage and its
// tensor-parallel rows of the vocabulary. Pure arithmetic on the config (torch-free), so that
// the model's constructor reads as the model and only asks the slice what to keep.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/stage_layers.h"

namespace hydra::model {

struct ModelSlice {
  int first_layer = 0;       // the global layers [first_layer, end_layer) this stage holds
  int end_layer = 0;
  bool first_stage = true;   // holds the embedding lookup
  bool last_stage = true;    // holds the final norm, the head and the loss
  int64_t vocab_padded = 0;  // rows of the whole embedding and head: a multiple of 128 * tp
  int64_t vocab_local = 0;   // this rank's rows: vocab_padded / tp
  int64_t vocab_begin = 0;   // the first of them
  // Rows one process draws at initialisation (the vocabulary padded for tp = 1), so that
  // every later parameter draws the same random numbers at any tp; a larger tp's extra
  // padding rows start at 0 (padded rows are never read).
  int64_t vocab_drawn = 0;

  // The layers [first, end) of macro-block `block` (of `per_block` layers) this stage holds,
  // as positions within the block; first >= end when it holds none of them.
  int block_first(int block, int per_block) const;
  int block_end(int block, int per_block) const;
  // This rank's rows of the drawn vocabulary that exist in it: [vocab_begin, vocab_begin + kept).
  int64_t vocab_rows_kept() const;
};

// tp_size and tp_rank: this rank's tensor-parallel group (1 and 0 for a whole model);
// padding_tp: the tp the vocabulary is padded for (a single process reading a tp run's
// checkpoint pads as that run did). Fails on a stage outside the model.
ModelSlice make_model_slice(const ModelConfig& config, const StageLayers& stage, int tp_size, int tp_rank,
                            int padding_tp);

}  // namespace hydra::model
