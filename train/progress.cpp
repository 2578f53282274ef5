#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#ifdef HYDRA_CUDA
#include <cuda_runtime_api.h>
#endif

#include "common/logging.h"

namespace hydra::train {
namespace {

std::string duration_text(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

double memory_in_use_bytes(bool cuda) {
#ifdef HYDRA_CUDA
  if (cuda) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return static_cast<double>(total_bytes - free_bytes);
  }
#else
  (void)cuda;
#endif
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

ProgressLine::ProgressLine(int total_steps, int start_step, bool cuda)
    : total_steps_(total_steps), start_step_(start_step), cuda_(cuda), start_(std::chrono::steady_clock::now()) {}

void ProgressLine::print(const StepMetrics& row) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int done = row.step - start_step_;
  if (done == 1) first_step_s_ = elapsed;
  // The rate after the first step: its warm-up would otherwise inflate the ETA for a long time.
  const double rate = done > 1 && first_step_s_ ? (elapsed - *first_step_s_) / (done - 1) : elapsed / std::max(done, 1);
  const double eta = rate * (total_steps_ - row.step);
  using common::strprintf;
  std::string line = strprintf("step %d/%d | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s", row.step, total_steps_,
                               row.loss, row.lr, row.grad_norm, row.tok_s);
  if (row.mfu) line += strprintf(" | mfu %.1f%%", *row.mfu * 100);
  line += strprintf(" | mem %.2f GB | ETA %s", memory_in_use_bytes(cuda_) / 1e9, duration_text(eta).c_str());
  // The first step includes warm-up (allocation, first kernels, first collectives): its time
  // says why the next lines are faster.
  if (done == 1) line += strprintf(" | first step %.1f s (includes warm-up)", elapsed);
  if (row.aux_loss != 0) line += strprintf(" | aux %.4f", row.aux_loss);
  if (row.skipped) line += strprintf(" | skipped %d", row.skipped);
  if (row.val_loss) line += strprintf(" | val_loss %.4f (ppl %.1f)", *row.val_loss, std::exp(*row.val_loss));
  common::log_info("%s", line.c_str());
}

}  // namespace hydra::train
