// Generation (contract in generation.hpp).
#include "generation.hpp"

#include "api_error.hpp"
#include "dsv4/error.hpp"

namespace dsv4::server {

Generation::Generation(EngineHost& host, Metrics& metrics, size_t queue_capacity)
    : host_(host), metrics_(metrics), queue_(std::make_shared<EventQueue>(queue_capacity)) {}

Generation::~Generation() {
  if (ids_.empty()) return;
  Scheduler& sched = host_.scheduler();
  for (RequestId id : ids_) sched.cancel(id);  // no-op for finished ones
  for (RequestId id : ids_) {
    try {
      sched.wait(id);  // at most one step once cancelled
      if (auto out = sched.take(id)) metrics_.observe_request(*out);
    } catch (const std::exception&) {
      // Unknown id (never happens: only this object takes its ids); nothing left to free.
    }
    host_.untrack(id);
  }
}

void Generation::submit(const std::vector<std::vector<int32_t>>& prompts, const RequestParams& params) {
  Scheduler& sched = host_.scheduler();
  for (size_t p = 0; p < prompts.size(); ++p) {
    Request r;
    r.prompt = prompts[p];
    r.params = params;
    // Engine thread, between steps: copy and hand over, never wait. The queue is shared so that
    // events arriving after the HTTP side gave up land somewhere harmless.
    std::shared_ptr<EventQueue> q = queue_;
    Scheduler* s = &sched;
    const int prompt = static_cast<int>(p);
    r.on_event = [q, s, prompt](const RequestEvent& e) {
      TokenEvent t;
      t.prompt = prompt;
      t.sample = e.index;
      t.token = e.token;
      t.piece = std::string(e.piece);
      if (e.logprobs) t.logprobs = *e.logprobs;
      t.finished = e.finished;
      t.error = std::string(e.error);
      if (!q->push(std::move(t))) s->cancel(e.request);  // the client fell too far behind
    };
    RequestId id = 0;
    try {
      id = sched.submit(std::move(r));
    } catch (const dsv4::Error& e) {
      throw from_core_error(e, "prompt");  // the destructor cancels the prompts already queued
    }
    ids_.push_back(id);
    host_.track(id);
  }
  // A shutdown that began while we submitted did not see these ids: cancel them here.
  if (host_.state() == EngineHost::State::stopping) cancel();
}

void Generation::cancel() {
  for (RequestId id : ids_) host_.scheduler().cancel(id);
}

}  // namespace dsv4::server
