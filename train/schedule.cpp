#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace hydra::train {

double lr_at(const Schedule& s, int step) {
  if (step < s.warmup_steps) return s.lr * (step + 1) / s.warmup_steps;
  const int decay_steps = std::max(1, s.total_steps - 1 - s.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / decay_steps);
  return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace hydra::train
