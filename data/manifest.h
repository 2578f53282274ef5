// manifest.json: what `hydra data prepare` wrote into a dataset directory, read by the
// loader. Example:
//   {"format": "hydra-token-shards", "version": 1, "tokenizer": "gpt2", "vocab_size": 50257,
//    "eot_id": 50256, "token_bytes": 2, "documents": 1234, "val_fraction": 0.005,
//    "train": [{"file": "train_000000.bin", "tokens": 67108864}, ...],
//    "val": [{"file": "val_000000.bin", "tokens": 40960}]}
// Shard files are named relative to the manifest's directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hydra::data {

struct ShardEntry {
  std::string file;  // relative to the dataset directory
  uint64_t tokens = 0;
};

struct Manifest {
  std::string tokenizer;  // gpt2 | bytes
  int32_t vocab_size = 0;
  int32_t eot_id = 0;
  uint32_t token_bytes = 2;
  uint64_t documents = 0;
  double val_fraction = 0;
  std::vector<ShardEntry> train;
  std::vector<ShardEntry> val;
};

constexpr const char* kManifestName = "manifest.json";

// Writes dir/manifest.json through a temporary and a rename.
void write_manifest(const std::string& dir, const Manifest& manifest);

// Reads dir/manifest.json; a missing file, bad JSON or a missing/mistyped key is an
// InputError naming the file (and the key).
Manifest read_manifest(const std::string& dir);

// Writes content to path through a temporary in the same directory and a rename, so that
// readers see the old file or the new one, never a partial one.
void write_file_atomically(const std::string& path, const std::string& content);

}  // namespace hydra::data
