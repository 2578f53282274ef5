// A complete, valid model section (YAML) for config tests: cases add to it or break it.
#pragma once

namespace hydra::test {

inline const char* const kValidModelYaml =
    "model:\n"
    "  dim: 64\n"
    "  heads: 4\n"
    "  kv_heads: 2\n"
    "  macro_blocks: 1\n"
    "  vocab_size: 256\n";

}  // namespace hydra::test
