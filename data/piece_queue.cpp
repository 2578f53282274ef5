#include "data/piece_queue.h"

#include <exception>

#include "common/errors.h"

namespace hydra::data {

PieceQueue::PieceQueue(const Tokenizer& tokenizer, int threads) : tokenizer_(tokenizer) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

PieceQueue::~PieceQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

void PieceQueue::submit(CorpusPiece piece) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto slot = std::make_unique<Slot>();
    slot->piece = std::move(piece);
    slots_.push_back(std::move(slot));
  }
  work_ready_.notify_one();
}

std::pair<CorpusPiece, PieceResult> PieceQueue::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  HYDRA_CHECK(!slots_.empty(), "PieceQueue::next() with nothing in flight");
  slot_done_.wait(lock, [&] { return slots_.front()->done; });
  std::unique_ptr<Slot> slot = std::move(slots_.front());
  slots_.pop_front();
  --next_to_start_;
  if (slot->failure) std::rethrow_exception(slot->failure);
  return {std::move(slot->piece), std::move(slot->result)};
}

size_t PieceQueue::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.size();
}

void PieceQueue::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stop_ || next_to_start_ < slots_.size(); });
    if (stop_) return;
    Slot* slot = slots_[next_to_start_++].get();
    slot->started = true;
    lock.unlock();
    PieceResult result;
    std::exception_ptr failure;
    try {
      result = tokenize_piece(slot->piece, tokenizer_);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    slot->result = std::move(result);
    slot->failure = failure;
    slot->done = true;
    slot_done_.notify_all();
  }
}

}  // namespace hydra::data
