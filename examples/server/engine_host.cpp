// EngineHost (contract in engine_host.hpp).
#include "engine_host.hpp"

#include <chrono>
#include <vector>

#include "dsv4/error.hpp"

namespace dsv4::server {

EngineHost::EngineHost(const ServerOptions& opt, const Logger& log) : opt_(opt), log_(log) {}

EngineHost::~EngineHost() {
  if (loader_.joinable()) loader_.join();
  // The scheduler first (its loop thread uses the model's backend), then the model.
  sched_.reset();
  model_.reset();
}

void EngineHost::load_async() {
  loader_ = std::thread([this] { load(); });
}

EngineHost::State EngineHost::wait_loaded() {
  if (loader_.joinable()) loader_.join();
  return state();
}

void EngineHost::load() {
  try {
    const auto t0 = std::chrono::steady_clock::now();
    LoadOptions lo = opt_.load;
    lo.load_tokenizer = true;
    auto model = Model::load(opt_.model_dir, lo, log_);
    if (!model->tokenizer())
      fail(Status::format, "{}: the server needs the model's tokenizer.json (text prompts, chat format)", opt_.model_dir);
    auto sched = std::make_unique<Scheduler>(model->backend(), model->tokenizer(), opt_.scheduler);
    const int64_t cfg_max = model->config().max_position_embeddings;
    max_model_len_ = opt_.scheduler.max_model_len ? opt_.scheduler.max_model_len : cfg_max;
    sched->start();
    model_ = std::move(model);
    sched_ = std::move(sched);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_.info("serve: model loaded in {:.1f} s (backend {}, max_model_len {})", s, model_->backend_name(),
              max_model_len_);
    // Publish: everything above happens-before any reader that sees `ready`.
    State expected = State::loading;
    if (!state_.compare_exchange_strong(expected, State::ready, std::memory_order_acq_rel)) {
      // Shut down while loading: nothing was admitted yet; stay stopping.
    }
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = e.what();
    }
    state_.store(State::failed, std::memory_order_release);
  }
}

std::string EngineHost::error() const {
  std::lock_guard<std::mutex> lk(mu_);
  return error_;
}

void EngineHost::track(RequestId id) {
  std::lock_guard<std::mutex> lk(mu_);
  live_.insert(id);
}

void EngineHost::untrack(RequestId id) {
  std::lock_guard<std::mutex> lk(mu_);
  live_.erase(id);
}

void EngineHost::begin_shutdown() {
  State s = state_.load(std::memory_order_acquire);
  while ((s == State::ready || s == State::loading) &&
         !state_.compare_exchange_weak(s, State::stopping, std::memory_order_acq_rel)) {
  }
  if (s != State::ready) return;  // still loading: nothing was admitted (and sched_ is the loader's)
  std::vector<RequestId> ids;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ids.assign(live_.begin(), live_.end());
  }
  for (RequestId id : ids) sched_->cancel(id);
}

}  // namespace dsv4::server
