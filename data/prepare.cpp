#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/errors.h"
#include "data/corpus_reader.h"
#include "data/manifest.h"
#include "data/mix.h"
#include "data/piece_queue.h"
#include "data/prepare_output.h"
#include "data/progress.h"
#include "data/shard.h"
#include "data/stop_signals.h"

namespace hydra::data {
namespace {

namespace fs = std::filesystem;
using common::ConfigError;
using common::InputError;

constexpr uint64_t kSplitSalt = 0x7661'6c69'6461'7465ULL;  // "validate"

bool chunk_is_val(uint64_t chunk, double val_fraction) {
  return val_fraction > 0 && unit_interval(splitmix64(chunk ^ kSplitSalt)) < val_fraction;
}

std::string shard_name(const std::string& prefix, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s_%06zu.bin", prefix.c_str(), index);
  return buf;
}

// The shards of one split (train or val): a new shard every shard_tokens tokens.
class ShardSet {
 public:
  ShardSet(std::string dir, std::string prefix, int32_t vocab, uint64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), vocab_(vocab), shard_tokens_(shard_tokens) {}

  void append(const int32_t* tokens, size_t count) {
    while (count > 0) {
      if (writers_.empty() || writers_.back()->tokens() == shard_tokens_) {
        writers_.push_back(std::make_unique<ShardWriter>(dir_ + "/" + shard_name(prefix_, writers_.size()), vocab_));
      }
      const size_t take = static_cast<size_t>(std::min<uint64_t>(count, shard_tokens_ - writers_.back()->tokens()));
      writers_.back()->append(tokens, take);
      tokens += take, count -= take, total_ += take;
    }
  }

  std::vector<ShardEntry> close() {
    std::vector<ShardEntry> entries;
    for (auto& w : writers_) {
      w->close();
      entries.push_back({fs::path(w->path()).filename().string(), w->tokens()});
    }
    return entries;
  }

  void rename() {
    for (auto& w : writers_) w->rename();
  }

  uint64_t tokens() const { return total_; }

 private:
  std::string dir_, prefix_;
  int32_t vocab_;
  uint64_t shard_tokens_;
  uint64_t total_ = 0;
  std::vector<std::unique_ptr<ShardWriter>> writers_;
};

// Routes the token stream to train or val chunk by chunk (see prepare.h). The newest chunk
// is held back until more tokens arrive, so that finish() knows which chunk was the last.
class Splitter {
 public:
  Splitter(const PrepareOptions& o, const std::string& dir, int32_t vocab)
      : chunk_(o.val_chunk_tokens), fraction_(o.val_fraction),
        train_(dir, "train", vocab, o.shard_tokens), val_(dir, "val", vocab, o.shard_tokens) {
    pending_.reserve(static_cast<size_t>(chunk_));
  }

  void add(const std::vector<int32_t>& tokens) {
    size_t at = 0;
    while (at < tokens.size()) {
      if (pending_.size() == chunk_) flush(chunk_is_val(chunk_index_, fraction_));
      const size_t take = std::min<size_t>(tokens.size() - at, static_cast<size_t>(chunk_) - pending_.size());
      pending_.insert(pending_.end(), tokens.begin() + at, tokens.begin() + at + take);
      at += take;
      total_ += take;
    }
  }

  void finish() {
    if (pending_.empty()) return;
    if (fraction_ > 0 && val_.tokens() == 0) {
      const uint64_t want = static_cast<uint64_t>(std::ceil(fraction_ * static_cast<double>(total_)));
      const size_t val_count = static_cast<size_t>(std::min<uint64_t>(std::max<uint64_t>(want, 1), pending_.size()));
      train_.append(pending_.data(), pending_.size() - val_count);
      val_.append(pending_.data() + pending_.size() - val_count, val_count);
      pending_.clear();
    } else {
      flush(chunk_is_val(chunk_index_, fraction_));
    }
  }

  ShardSet& train() { return train_; }
  ShardSet& val() { return val_; }
  uint64_t total() const { return total_; }

 private:
  void flush(bool to_val) {
    (to_val ? val_ : train_).append(pending_.data(), pending_.size());
    pending_.clear();
    ++chunk_index_;
  }

  uint64_t chunk_;
  double fraction_;
  ShardSet train_, val_;
  std::vector<int32_t> pending_;
  uint64_t chunk_index_ = 0;
  uint64_t total_ = 0;
};

void check_options(const PrepareOptions& o) {
  if (o.inputs.empty()) HYDRA_FAIL(ConfigError, "--input: give at least one file or directory");
  if (o.output_dir.empty()) HYDRA_FAIL(ConfigError, "--output: give the directory to write the shards to");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) {
    HYDRA_FAIL(ConfigError, "--val-fraction " << o.val_fraction << ": expected a number in [0, 1)");
  }
  if (o.shard_tokens == 0 || o.val_chunk_tokens == 0 || o.piece_bytes == 0 || o.threads < 0) {
    HYDRA_FAIL(ConfigError, "prepare: shard_tokens, val_chunk_tokens and piece_bytes must be positive, threads >= 0");
  }
}

std::string count(double v) {
  char buf[32];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

PrepareSummary prepare_corpus(const PrepareOptions& options) {
  check_options(options);
  OutputPlan output_plan = check_output(options.output_dir, options.inputs);
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(options.tokenizer, options.tokenizer_dir);
  const std::vector<InputFile> files = list_input_files(options.inputs);
  const StopSignals stop;
  OutputStaging output(std::move(output_plan));

  PrepareSummary summary;
  summary.input_files = files.size();
  for (const auto& f : files) summary.input_bytes += f.bytes;
  const int threads = options.threads > 0 ? options.threads
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  Progress progress("prepare:", summary.input_bytes, options.progress);
  Splitter splitter(options, output.dir(), tokenizer->vocab_size());
  uint64_t bytes_done = 0;
  uint64_t file_documents = 0;  // documents of the current file so far

  {
    PieceQueue queue(*tokenizer, threads);
    const size_t max_in_flight = static_cast<size_t>(threads) * 3;
    const auto consume_one = [&] {
      auto [piece, result] = queue.next();
      if (!result.error.empty()) throw InputError(result.error);
      if (stop.received() != 0) {
        HYDRA_FAIL(common::RuntimeFailure, "interrupted by signal " << stop.received() << " (" << strsignal(stop.received())
                                           << "); --output " << options.output_dir << " is as it was");
      }
      splitter.add(result.tokens);
      bytes_done += result.bytes;
      summary.documents += result.documents;
      file_documents += result.documents;
      if (piece.last_of_file) {
        if (file_documents == 0) {
          HYDRA_FAIL(InputError, "input " << piece.input->file().path
                                          << ": no documents (every line is blank or has an empty \"text\")");
        }
        file_documents = 0;
      }
      progress.update(bytes_done, splitter.total());
    };
    for (const InputFile& file : files) {
      std::vector<CorpusPiece> pieces;
      try {
        pieces = cut_into_pieces(std::make_shared<const MappedInput>(file), options.piece_bytes);
      } catch (const InputError&) {
        while (queue.in_flight() > 0) consume_one();  // report earlier errors first
        throw;
      }
      for (CorpusPiece& piece : pieces) {
        while (queue.in_flight() >= max_in_flight) consume_one();
        queue.submit(std::move(piece));
      }
    }
    while (queue.in_flight() > 0) consume_one();
  }
  splitter.finish();

  if (splitter.train().tokens() == 0) {
    HYDRA_FAIL(InputError, "input: only " << splitter.total() << " tokens, none left for training after the "
                                          << "validation split (--val-fraction " << options.val_fraction << ")");
  }
  Manifest manifest;
  manifest.tokenizer = tokenizer->name();
  manifest.vocab_size = tokenizer->vocab_size();
  manifest.eot_id = tokenizer->eot_id();
  manifest.token_bytes = token_bytes_for(tokenizer->vocab_size());
  manifest.documents = summary.documents;
  manifest.val_fraction = options.val_fraction;
  manifest.train = splitter.train().close();
  manifest.val = splitter.val().close();
  splitter.train().rename();
  splitter.val().rename();
  write_manifest(output.dir(), manifest);
  output.publish();

  summary.train_tokens = splitter.train().tokens();
  summary.val_tokens = splitter.val().tokens();
  summary.train_shards = manifest.train.size();
  summary.val_shards = manifest.val.size();
  summary.seconds = progress.elapsed_seconds();
  progress.update(bytes_done, splitter.total());
  char line[512];
  std::snprintf(line, sizeof line,
                "wrote %s: %llu files, %sB, %llu documents -> %s train tokens (%zu shard%s) + %s val tokens "
                "(%zu shard%s), %s, in %.1f s (%s tok/s, %d threads)",
                options.output_dir.c_str(), static_cast<unsigned long long>(summary.input_files),
                count(static_cast<double>(summary.input_bytes)).c_str(),
                static_cast<unsigned long long>(summary.documents), count(static_cast<double>(summary.train_tokens)).c_str(),
                summary.train_shards, summary.train_shards == 1 ? "" : "s",
                count(static_cast<double>(summary.val_tokens)).c_str(), summary.val_shards,
                summary.val_shards == 1 ? "" : "s", tokenizer->name().c_str(), summary.seconds,
                count(summary.seconds > 0 ? static_cast<double>(splitter.total()) / summary.seconds : 0).c_str(), threads);
  progress.finish(line);
  return summary;
}

}  // namespace hydra::data
