// The hand-off between the engine thread and one HTTP request. The scheduler's callback runs on
// the engine loop thread between steps, so it must never block on a client: it only copies the
// event into this queue (push never waits). The HTTP thread drains it at its own pace. The queue
// is bounded in token events: a client that falls `capacity` tokens behind has its push refused
// (the caller then cancels the request). Finish events are always accepted — they are at most one
// per sample, and without them the HTTP side could not tell that a sample ended.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dsv4/generate.hpp"
#include "dsv4/sampler.hpp"

namespace dsv4::server {

struct TokenEvent {
  int prompt = 0;    // which prompt of the API request (completions may carry several)
  int sample = 0;    // which of its n samples
  int32_t token = -1;  // −1: a finish without a token
  std::string piece;   // text that became final with this token
  std::optional<SampleResult> logprobs;
  std::optional<StopReason> finished;
  std::string error;   // with finished == error
};

class EventQueue {
 public:
  explicit EventQueue(size_t capacity) : capacity_(capacity) {}

  // Engine thread. False (event dropped, overflowed() set) when a token event finds the queue full.
  bool push(TokenEvent e) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!e.finished && tokens_ >= capacity_) {
        overflowed_ = true;
        return false;
      }
      if (!e.finished) ++tokens_;
      q_.push_back(std::move(e));
    }
    cv_.notify_one();
    return true;
  }

  // HTTP thread: waits up to `timeout` for at least one event, then moves every queued one into
  // `out` (appended). Returns whether anything was moved.
  bool pop_all(std::vector<TokenEvent>& out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !q_.empty(); })) return false;
    for (auto& e : q_) out.push_back(std::move(e));
    q_.clear();
    tokens_ = 0;
    return true;
  }

  bool overflowed() const {
    std::lock_guard<std::mutex> lk(mu_);
    return overflowed_;
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> q_;
  size_t tokens_ = 0;
  bool overflowed_ = false;
};

}  // namespace dsv4::server
