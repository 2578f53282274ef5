#include "train/preemption.h"

#include <ATen/ATen.h>

#include <atomic>
#include <csignal>

namespace hydra::train {
namespace {

std::atomic<bool> g_signalled{false};  // set by the handler (lock-free, async-signal-safe)

void on_preemption_signal(int) { g_signalled.store(true); }

}  // namespace

void install_preemption_handlers() {
  struct sigaction action{};
  action.sa_handler = on_preemption_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls (file I/O, MPI polling) continue
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  // Ctrl-C: the first one saves like SIGTERM; SA_RESETHAND restores the default action, so a
  // second one stops the process at once (a save it cuts short is left uncommitted).
  action.sa_flags |= SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
}

bool preemption_signalled() { return g_signalled.load(); }

bool preemption_agreed(parallel::Communicator* world, const at::TensorOptions& device) {
  if (!world || world->size() == 1) return preemption_signalled();
  at::Tensor flag = at::full({1}, preemption_signalled() ? 1.0 : 0.0, device.dtype(at::kFloat));
  world->all_reduce(flag, parallel::ReduceOp::kMax);
  return flag.cpu().item<float>() > 0.5f;
}

}  // namespace hydra::train
