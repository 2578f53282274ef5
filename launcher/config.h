// The typed run configuration: one struct per section of docs/INTERFACE.md. Loaded and
// validated once by load_config() (config_load.cpp) from defaults, the preset, the YAML file
// and --set overrides; every component reads its section from here and nothing else.
// Defaults live in one place: the schema table in config_schema.cpp.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/config.h"

namespace hydra::launcher {

struct TrainConfig {
  int steps = 1000;
  int global_batch = 8;           // sequences per optimizer step
  int micro_batch = 0;            // sequences per forward; 0: global_batch / dp
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
  std::string activation_checkpointing = "none";  // none|layer|block
  int eval_every = 0;             // 0: only at the end
  int eval_batches = 8;
};

struct DataConfig {
  std::string path;               // directory written by `hydra data prepare`
  std::string tokenizer = "gpt2"; // gpt2|bytes
};

struct CheckpointConfig {
  std::string dir = "checkpoints";
  int every = 0;                  // 0: only at the end
  int keep = 3;
  bool async = false;
};

struct LogConfig {
  int every = 10;
  std::string jsonl;              // metrics file; empty: none
  std::string level = "info";     // trace|debug|info|warn|error
  bool all_ranks = false;
};

struct Config {
  model::ModelConfig model;
  parallel::ParallelConfig parallel;
  TrainConfig train;
  DataConfig data;
  CheckpointConfig checkpoint;
  LogConfig log;
  std::string source;             // the config file it came from (for messages)
};

}  // namespace hydra::launcher
