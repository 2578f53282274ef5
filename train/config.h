// The train section of the run config. Plain data: the launcher fills and validates it.
#pragma once

#include <string>
#include <vector>

namespace hydra::train {

struct TrainConfig {
  int steps = 1000;
  int global_batch = 8;           // sequences per optimizer step
  int micro_batch = 0;            // sequences per forward; 0: global_batch / (dp * micro_batches)
  int seq_len = 256;
  double lr = 3e-4;
  double min_lr = 3e-5;
  int warmup_steps = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double clip = 1.0;              // 0: no clipping
  int seed = 1234;
  std::string dtype = "fp32";     // fp32|bf16
  std::string device = "cpu";     // cpu|cuda
  std::string on_nonfinite = "skip";  // skip|halt
  std::string activation_checkpointing = "none";  // none|mlp|layer|block
  int stop_at_step = 0;           // stop (with a checkpoint) at this step without changing the
                                  // schedule, to split a run across allocations; 0: run to `steps`
  int inject_nonfinite_step = 0;  // testing aid: rank 0's loss of this step becomes NaN; 0: off
  int eval_every = 0;             // 0: only at the end
  int eval_batches = 8;
  double peak_tflops = 0;         // one GPU's dense bf16 peak for MFU; 0: from the detected GPU
  std::string cuda_graphs = "auto";  // auto|on|off: capture the step in a CUDA graph (train/step_graph.h)
  // Glob patterns (`*`: any run of characters) of parameter names left as they are: no
  // gradient, no optimizer state (train/frozen_params.h). Empty: every parameter trains.
  std::vector<std::string> freeze;
};

}  // namespace hydra::train
