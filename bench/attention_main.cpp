// hydra_bench_attention [--json FILE]: `hydra bench attention` without the launcher, so that a
// kernel session can build and run the bench with only model/ and kernels/ (no checkpoint/,
// train/ or MPI in its link).
#include <cstdio>
#include <exception>
#include <string>

#include "bench/attention_bench.h"

int main(int argc, char** argv) {
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "usage: hydra_bench_attention [--json FILE]\n");
      return 2;
    }
  }
  try {
    return hydra::bench::run_attention_bench(json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hydra_bench_attention: %s\n", e.what());
    return 1;
  }
}
