// A fixed pool of threads that tokenizes corpus pieces and hands the results back in the
// order the pieces were submitted, so that the output never depends on scheduling.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/corpus_reader.h"

namespace hydra::data {

class PieceQueue {
 public:
  PieceQueue(const Tokenizer& tokenizer, int threads);
  ~PieceQueue();  // stops the workers (pieces not yet started are dropped) and joins them
  PieceQueue(const PieceQueue&) = delete;
  PieceQueue& operator=(const PieceQueue&) = delete;

  void submit(CorpusPiece piece);
  // Waits for the oldest submitted piece; requires in_flight() > 0. Rethrows what its
  // worker threw (an InputError in the input is reported in PieceResult::error instead).
  std::pair<CorpusPiece, PieceResult> next();
  size_t in_flight() const;

 private:
  struct Slot {
    CorpusPiece piece;
    PieceResult result;
    std::exception_ptr failure;  // rethrown by next()
    bool started = false;
    bool done = false;
  };
  void work();

  const Tokenizer& tokenizer_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;  // a slot to start, or stop
  std::condition_variable slot_done_;
  std::deque<std::unique_ptr<Slot>> slots_;  // submission order
  size_t next_to_start_ = 0;                 // index into slots_
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace hydra::data
