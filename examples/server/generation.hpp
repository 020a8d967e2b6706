// Generation: the scheduler requests behind one API request (one per prompt, each with n samples),
// all streaming into one bounded EventQueue. It owns their lifetime: submit() is all-or-none (a
// refusal cancels the prompts already queued and throws ApiError: 400 context / 429 queue full),
// and the destructor cancels whatever is still running, waits until the scheduler has delivered
// the last event, takes the outputs (the scheduler keeps them until taken) and records them in
// the metrics. So a handler that leaves early — client gone, timeout, exception — leaks nothing.
//
// The scheduler callback (engine thread) only pushes into the queue; when a client is so far
// behind that the queue is full, the callback cancels that request (its finish still arrives).
#pragma once
#include <chrono>
#include <memory>
#include <vector>

#include "engine_host.hpp"
#include "event_queue.hpp"
#include "metrics.hpp"

namespace dsv4::server {

class Generation {
 public:
  Generation(EngineHost& host, Metrics& metrics, size_t queue_capacity);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  void submit(const std::vector<std::vector<int32_t>>& prompts, const RequestParams& params);

  // Waits up to `timeout` for events and appends them to `out`; false when none came.
  bool next(std::vector<TokenEvent>& out, std::chrono::milliseconds timeout) { return queue_->pop_all(out, timeout); }
  // Cancels every request (they finish at the next step with reason cancelled).
  void cancel();
  bool overflowed() const { return queue_->overflowed(); }

 private:
  EngineHost& host_;
  Metrics& metrics_;
  std::shared_ptr<EventQueue> queue_;
  std::vector<RequestId> ids_;
};

}  // namespace dsv4::server
