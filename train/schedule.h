// The learning-rate schedule: linear warmup from lr/warmup to lr over warmup_steps, then a
// cosine from lr down to min_lr at the last step. Steps count from 0.
#pragma once

namespace hydra::train {

struct Schedule {
  double lr = 3e-4;
  double min_lr = 3e-5;
  int warmup_steps = 0;
  int total_steps = 1;
};

double lr_at(const Schedule& schedule, int step);

}  // namespace hydra::train
