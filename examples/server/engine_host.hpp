// EngineHost: the model and its continuous-batching Scheduler behind the HTTP server, with the
// loading lifecycle the server exposes: loading (the HTTP listener already answers, /health says
// 503 "loading") → ready (the scheduler's loop thread runs) → stopping (Ctrl-C: every live request
// is cancelled so open streams end, new ones get 503), or failed (load error; the server exits).
//
// Threading: state() is lock-free and callable from any thread. model(), scheduler(), tokenizer()
// may be called only once state() returned ready (they are set before the state is published, and
// live until the EngineHost is destroyed — after the HTTP server has stopped). track / untrack /
// begin_shutdown may be called from any thread.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "dsv4/engine.hpp"
#include "dsv4/scheduler.hpp"
#include "dsv4/tokenizer.hpp"
#include "server_options.hpp"

namespace dsv4::server {

class EngineHost {
 public:
  enum class State { loading, ready, failed, stopping };

  EngineHost(const ServerOptions& opt, const Logger& log);
  ~EngineHost();  // joins the loader, stops the scheduler loop (unfinished requests end cancelled)
  EngineHost(const EngineHost&) = delete;
  EngineHost& operator=(const EngineHost&) = delete;

  // Starts Model::load on a thread of its own; wait_loaded() joins it and returns the state.
  void load_async();
  State wait_loaded();

  State state() const { return state_.load(std::memory_order_acquire); }
  std::string error() const;  // why loading failed

  const Model& model() const { return *model_; }
  Scheduler& scheduler() { return *sched_; }
  const Tokenizer& tokenizer() const { return *model_->tokenizer(); }
  int64_t max_model_len() const { return max_model_len_; }

  // Live scheduler requests, so that a shutdown can cancel them (Generation registers its ids).
  void track(RequestId id);
  void untrack(RequestId id);
  // State → stopping, then cancels every tracked request: their streams end at the next step.
  void begin_shutdown();

 private:
  void load();

  const ServerOptions& opt_;
  const Logger& log_;
  std::atomic<State> state_{State::loading};
  std::thread loader_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Scheduler> sched_;
  int64_t max_model_len_ = 0;
  mutable std::mutex mu_;
  std::string error_;
  std::set<RequestId> live_;
};

}  // namespace dsv4::server
