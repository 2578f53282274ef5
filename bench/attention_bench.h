// `hydra bench attention`: the CCQA layer with fused kernels, with the reference path, and a
// GQA+FlashAttention layer of the same width, forward and forward+backward, plus the latent
// attention kernels against ceilings measured in the same run. CUDA build only.
#pragma once

#include <string>

namespace hydra::bench {

// Runs the whole matrix, prints progress and a table, writes JSON to json_path when it is not
// empty. Returns the process exit code.
int run_attention_bench(const std::string& json_path);

}  // namespace hydra::bench
