// Corpus preparation (`hydra data prepare`): text in, token shards and a manifest out.
//
// The documents of all inputs, in order, each followed by end-of-text, form one token
// stream. The stream is cut into chunks of val_chunk_tokens; chunk k goes to validation when
// a fixed hash of k falls below val_fraction (so about that fraction, spread through the
// corpus, the same on every run). If no chunk was drawn, the last ceil(val_fraction x N)
// tokens (at most the last chunk) are. Train and val tokens go to shards of shard_tokens
// (train_000000.bin, ..., val_000000.bin, ...; format in shard.h), then manifest.json.
// Everything is written into a staging directory that becomes output_dir only when complete
// (prepare_output.h: which output directories are accepted, how an earlier output is
// replaced). The output does not depend on the number of threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace hydra::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  // .txt / .jsonl files and directories (corpus_reader.h)
  std::string output_dir;           // new, empty, or an earlier prepare's output (replaced)
  std::string tokenizer = "gpt2";   // gpt2 | bytes
  std::string tokenizer_dir = default_tokenizer_dir();
  double val_fraction = 0.005;            // in [0, 1)
  uint64_t shard_tokens = 1ULL << 26;     // tokens per shard (64 Mi: 128 MiB as uint16)
  uint64_t val_chunk_tokens = 8192;       // granularity of the train/val split
  size_t piece_bytes = 1 << 20;           // unit of work for one thread
  int threads = 0;                        // 0: std::thread::hardware_concurrency()
  bool progress = true;                   // progress on stderr
};

struct PrepareSummary {
  uint64_t input_files = 0;
  uint64_t input_bytes = 0;
  uint64_t documents = 0;
  uint64_t train_tokens = 0;
  uint64_t val_tokens = 0;
  size_t train_shards = 0;
  size_t val_shards = 0;
  double seconds = 0;
};

// Bad options: ConfigError naming the option (--input, --output, --tokenizer,
// --val-fraction); an output directory that is not empty and not an earlier output of
// prepare, or that is or holds an input, is one too. SIGINT, SIGTERM or SIGHUP: a
// RuntimeFailure, with the output as it was. Unreadable, empty, non-UTF-8 or NUL-containing input, or a JSONL line
// without a "text" string: InputError naming the file (and line).
PrepareSummary prepare_corpus(const PrepareOptions& options);

}  // namespace hydra::data
