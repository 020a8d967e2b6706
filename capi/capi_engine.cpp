// C API: the continuous-batching engine (capi/dsv4.h "engine"), a thin layer over dsv4::Scheduler
// (include/dsv4/scheduler.hpp) running its own loop thread. The C request parameters become a
// dsv4::Request; every request gets a trampoline callback that forwards its events to the C
// callback. The scheduler reports a request finished only once its last event has been handed to
// the callback, so a host may free what its callback uses when dsv4_engine_wait returns. Timed
// waits (the scheduler's wait has no timeout) sleep on a condition variable the trampoline
// signals at every final event. Outputs are read from Scheduler::poll snapshots. Errors are
// checked here first (ids, parameters, lengths) so that a refusal names the C field; the
// scheduler's own checks stay authoritative.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <iterator>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "capi_internal.hpp"
#include "dsv4/scheduler.hpp"

struct dsv4_engine {
  const dsv4_model* model = nullptr;
  int64_t max_len = 0;
  int max_n = 0;
  // Declared before `sched`: the scheduler's destructor may still run callbacks that touch them.
  std::mutex mu;
  std::condition_variable finished_cv;        // a sample finished somewhere (epoch moved)
  uint64_t finish_epoch = 0;                  // guarded by mu
  // request → final events handed to its callback (the scheduler marks the request finished right
  // after the step's callbacks: a timed wait that sees all of them polls again shortly); guarded by mu
  std::unordered_map<uint64_t, int> final_events;
  std::unique_ptr<dsv4::Scheduler> sched;

  ~dsv4_engine() { sched.reset(); }  // stops the loop (unfinished requests end cancelled) first
};

using namespace dsv4;
using capi::guard;
using capi::require;

namespace {

// Set while a request callback runs on this thread: wait / release from there would wait for the
// very callback that is running.
thread_local const dsv4_engine* t_in_callback = nullptr;

void not_in_callback(const char* fn) {
  if (t_in_callback) fail(Status::invalid_argument, "{} must not be called from a request callback", fn);
}

struct CallbackCtx {
  dsv4_engine* engine;
  dsv4_request_callback cb;
  void* user;
};

void check_reserved(const uint64_t* r, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (r[i]) fail(Status::invalid_argument, "{}.reserved must be zero (use its default_params function)", what);
}

// The scheduler, or Error while dsv4_engine_free runs (callbacks of the requests it cancels run
// then, and may call in).
Scheduler& sched_of(const dsv4_engine* e) {
  if (!e->sched) fail(Status::invalid_argument, "the engine is being freed");
  return *e->sched;
}

RequestOutput poll_or_fail(const dsv4_engine* e, uint64_t id) {
  std::optional<RequestOutput> o = sched_of(e).poll(id);
  if (!o) fail(Status::invalid_argument, "request {} is unknown to this engine (never submitted, or released)", id);
  return std::move(*o);
}

const SampleOutput& sample_or_fail(const RequestOutput& o, int32_t index) {
  if (index < 0 || static_cast<size_t>(index) >= o.samples.size())
    fail(Status::invalid_argument, "sample index {} is outside [0, {}) of request {}", index, o.samples.size(), o.id);
  return o.samples[static_cast<size_t>(index)];
}

RequestParams to_request_params(const dsv4_engine* e, const dsv4_request_params& c) {
  check_reserved(c.reserved, std::size(c.reserved), "dsv4_request_params");
  const ModelConfig& cfg = e->model->model->config();
  const int vocab = cfg.vocab_size;
  const Tokenizer* tok = e->model->tokenizer.tok;
  RequestParams r;
  r.sampling = capi::to_sampler_params(c.sampler);
  if (c.logprobs < -1 || c.logprobs > 20)
    fail(Status::invalid_argument, "dsv4_request_params.logprobs {} must be in [-1, 20] (-1 = none)", c.logprobs);
  r.sampling.logprobs = c.logprobs;
  if (c.n_logit_bias) {
    require(c.logit_bias_ids, "dsv4_request_params.logit_bias_ids");
    require(c.logit_bias_values, "dsv4_request_params.logit_bias_values");
  }
  for (size_t i = 0; i < c.n_logit_bias; ++i) {
    const int32_t id = c.logit_bias_ids[i];
    const float v = c.logit_bias_values[i];
    if (id < 0 || id >= vocab)
      fail(Status::invalid_argument, "logit_bias_ids[{}] = {} is outside the vocabulary [0, {})", i, id, vocab);
    if (!std::isfinite(v)) fail(Status::invalid_argument, "logit_bias_values[{}] = {} is not finite", i, v);
    r.sampling.logit_bias.emplace_back(id, v);
  }
  Sampler check(r.sampling);  // every sampler field, named, before anything is queued

  if (c.max_tokens < 1)
    fail(Status::invalid_argument, "dsv4_request_params.max_tokens {} must be ≥ 1", c.max_tokens);
  r.stop.max_tokens = c.max_tokens;
  r.stop.stop_on_eos = !c.ignore_eos;
  // Without a tokenizer the core knows no EOS id; the config's is the model's own.
  if (!tok) r.stop.eos_id = cfg.eos_token_id;
  if (c.n_stop_token_ids) require(c.stop_token_ids, "dsv4_request_params.stop_token_ids");
  for (size_t i = 0; i < c.n_stop_token_ids; ++i) {
    const int32_t id = c.stop_token_ids[i];
    if (id < 0 || id >= vocab)
      fail(Status::invalid_argument, "stop_token_ids[{}] = {} is outside the vocabulary [0, {})", i, id, vocab);
    r.stop.stop_token_ids.push_back(id);
  }
  if (c.n_stop_strings) require(c.stop_strings, "dsv4_request_params.stop_strings");
  for (size_t i = 0; i < c.n_stop_strings; ++i) {
    if (!c.stop_strings[i]) fail(Status::invalid_argument, "stop_strings[{}] is NULL", i);
    if (!*c.stop_strings[i]) fail(Status::invalid_argument, "stop_strings[{}] is empty", i);
    r.stop.stop_strings.emplace_back(c.stop_strings[i]);
  }
  if (!r.stop.stop_strings.empty() && !tok)
    fail(Status::invalid_argument, "stop strings need the model's tokenizer (its folder has no tokenizer.json)");
  if (c.n < 1 || c.n > e->max_n)
    fail(Status::invalid_argument, "dsv4_request_params.n {} must be in [1, {}] (dsv4_engine_params.max_n)", c.n,
         e->max_n);
  r.n = c.n;
  return r;
}

// The trampoline every request gets: forwards to the C callback, wakes timed waits on a finish.
// Nothing may escape it (it runs inside the scheduler's step, on the engine thread).
RequestCallback make_callback(CallbackCtx ctx) {
  return [ctx](const RequestEvent& ev) noexcept {
    if (ctx.cb) try {
      dsv4_request_event c{};
      c.request_id = ev.request;
      c.index = ev.index;
      c.token = ev.token;
      c.piece = ev.piece.data();
      c.piece_len = ev.piece.size();
      c.finish_reason = ev.finished ? static_cast<int32_t>(*ev.finished) : -1;
      std::vector<dsv4_token_logprob> top;
      if (ev.logprobs) {
        c.logprob = ev.logprobs->logprob;
        top.reserve(ev.logprobs->top.size());
        for (const TokenLogprob& t : ev.logprobs->top) top.push_back({t.id, t.logprob});
        c.n_top = static_cast<int32_t>(top.size());
        c.top = top.empty() ? nullptr : top.data();
      }
      std::string error;  // "" needs no allocation
      if (!ev.error.empty()) error.assign(ev.error);
      c.error = error.c_str();
      const dsv4_engine* outer = t_in_callback;
      t_in_callback = ctx.engine;
      ctx.cb(&c, ctx.user);
      t_in_callback = outer;
    } catch (...) {
      // No memory for the event's copies: the event is dropped, the output (poll) still has it.
    }
    if (ev.finished) {
      {
        std::lock_guard<std::mutex> lk(ctx.engine->mu);
        ++ctx.engine->final_events[ev.request];
        ++ctx.engine->finish_epoch;
      }
      ctx.engine->finished_cv.notify_all();
    }
  };
}

}  // namespace

extern "C" {

dsv4_engine_params dsv4_engine_default_params(void) {
  const SchedulerOptions d;
  dsv4_engine_params p{};
  p.max_num_seqs = d.max_num_seqs;
  p.max_num_batched_tokens = d.max_num_batched_tokens;
  p.max_model_len = d.max_model_len;
  p.max_waiting = d.max_waiting;
  p.max_n = d.max_n;
  p.preemption = d.preemption == Preemption::reserve ? DSV4_PREEMPT_RESERVE : DSV4_PREEMPT_RECOMPUTE;
  return p;
}

dsv4_request_params dsv4_request_default_params(void) {
  dsv4_request_params p{};
  p.sampler = dsv4_sampler_default_params();
  p.max_tokens = 16;  // vLLM's SamplingParams default
  p.ignore_eos = false;
  p.n = 1;
  p.logprobs = -1;
  return p;
}

dsv4_status dsv4_engine_create(const dsv4_model* model, const dsv4_engine_params* params, dsv4_engine** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(model, "model");
    require(out, "out");
    const dsv4_engine_params p = params ? *params : dsv4_engine_default_params();
    check_reserved(p.reserved, std::size(p.reserved), "dsv4_engine_params");
    if (p.pad_) fail(Status::invalid_argument, "dsv4_engine_params.pad_ must be zero (use dsv4_engine_default_params)");
    if (p.max_num_seqs < 1)
      fail(Status::invalid_argument, "dsv4_engine_params.max_num_seqs {} must be ≥ 1", p.max_num_seqs);
    if (p.max_num_batched_tokens < 1)
      fail(Status::invalid_argument, "dsv4_engine_params.max_num_batched_tokens {} must be ≥ 1",
           p.max_num_batched_tokens);
    if (p.max_waiting < 0)
      fail(Status::invalid_argument, "dsv4_engine_params.max_waiting {} is negative (0 = unlimited)", p.max_waiting);
    if (p.max_n < 1) fail(Status::invalid_argument, "dsv4_engine_params.max_n {} must be ≥ 1", p.max_n);
    if (p.preemption != DSV4_PREEMPT_RECOMPUTE && p.preemption != DSV4_PREEMPT_RESERVE)
      fail(Status::invalid_argument, "dsv4_engine_params.preemption {} is not a dsv4_preemption", p.preemption);
    const int64_t limit = model->model->config().max_position_embeddings;
    if (p.max_model_len < 0)
      fail(Status::invalid_argument, "dsv4_engine_params.max_model_len {} is negative", p.max_model_len);
    if (limit > 0 && p.max_model_len > limit)
      fail(Status::invalid_argument,
           "dsv4_engine_params.max_model_len {} exceeds the model's max_position_embeddings {}", p.max_model_len,
           limit);
    SchedulerOptions o;
    o.max_num_seqs = p.max_num_seqs;
    o.max_num_batched_tokens = p.max_num_batched_tokens;
    o.max_model_len = p.max_model_len;
    o.max_waiting = p.max_waiting;
    o.max_n = p.max_n;
    o.preemption = p.preemption == DSV4_PREEMPT_RESERVE ? Preemption::reserve : Preemption::recompute;
    auto e = std::make_unique<dsv4_engine>();
    e->model = model;
    e->max_len = p.max_model_len > 0 ? p.max_model_len : limit;
    e->max_n = p.max_n;
    e->sched = std::make_unique<Scheduler>(model->model->backend(), model->tokenizer.tok, o);
    e->sched->start();
    *out = e.release();
  });
}

void dsv4_engine_free(dsv4_engine* engine) {
  try {
    delete engine;
  } catch (...) {
    // A destructor that throws has nowhere to report to; the C API never unwinds.
  }
}

dsv4_status dsv4_engine_submit(dsv4_engine* engine, const int32_t* prompt, size_t n_prompt,
                               const dsv4_request_params* params, dsv4_request_callback callback, void* user_data,
                               uint64_t* request_id) {
  if (request_id) *request_id = 0;
  return guard([&] {
    require(engine, "engine");
    require(request_id, "request_id");
    if (n_prompt == 0) fail(Status::invalid_argument, "n_prompt is 0 (a request needs at least one prompt token)");
    require(prompt, "prompt");
    const int vocab = engine->model->model->config().vocab_size;
    for (size_t i = 0; i < n_prompt; ++i)
      if (prompt[i] < 0 || prompt[i] >= vocab)
        fail(Status::invalid_argument, "prompt token {} at index {} is outside the vocabulary [0, {})", prompt[i], i,
             vocab);
    if (engine->max_len > 0 && static_cast<int64_t>(n_prompt) > engine->max_len)
      fail(Status::context_overflow, "the prompt of {} tokens is longer than max_model_len {}", n_prompt,
           engine->max_len);
    const dsv4_request_params c = params ? *params : dsv4_request_default_params();
    Request r;
    r.params = to_request_params(engine, c);
    r.prompt.assign(prompt, prompt + n_prompt);
    r.on_event = make_callback({engine, callback, user_data});
    *request_id = sched_of(engine).submit(std::move(r));  // a full queue: Error(busy) = DSV4_ERR_BUSY
  });
}

dsv4_status dsv4_engine_cancel(dsv4_engine* engine, uint64_t request_id) {
  return guard([&] {
    require(engine, "engine");
    sched_of(engine).cancel(request_id);
  });
}

dsv4_status dsv4_engine_wait(dsv4_engine* engine, uint64_t request_id, double timeout_seconds, bool* finished) {
  if (finished) *finished = false;
  return guard([&] {
    require(engine, "engine");
    not_in_callback("dsv4_engine_wait");
    if (std::isnan(timeout_seconds)) fail(Status::invalid_argument, "timeout_seconds is NaN");
    Scheduler& sched = sched_of(engine);
    if (timeout_seconds < 0) {
      sched.wait(request_id);  // Error(invalid_argument) for an unknown id
      if (finished) *finished = true;
      return;
    }
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                             std::chrono::duration<double>(std::min(timeout_seconds, 1e9)));
    for (;;) {
      uint64_t epoch;
      {
        std::lock_guard<std::mutex> lk(engine->mu);
        epoch = engine->finish_epoch;
      }
      // The epoch is read before the state: a final event in between moves it, so no wake-up is
      // lost. The 100 ms slice only bounds the wait should a wake-up ever be missed.
      const RequestOutput o = poll_or_fail(engine, request_id);
      if (o.finished) {
        if (finished) *finished = true;
        return;
      }
      const auto now = clock::now();
      if (now >= deadline) return;
      std::unique_lock<std::mutex> lk(engine->mu);
      const auto it = engine->final_events.find(request_id);
      if (it != engine->final_events.end() && it->second >= static_cast<int>(o.samples.size())) {
        // Every final event was handed over; the scheduler flags the request once the step's
        // other callbacks have run too, a moment later.
        lk.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        continue;
      }
      engine->finished_cv.wait_until(lk, std::min(deadline, now + std::chrono::milliseconds(100)),
                                     [&] { return engine->finish_epoch != epoch; });
    }
  });
}

dsv4_status dsv4_engine_get_output(const dsv4_engine* engine, uint64_t request_id, int32_t index, int32_t* tokens,
                                   size_t cap, size_t* n_needed, int32_t* finish_reason) {
  return guard([&] {
    require(engine, "engine");
    require(n_needed, "n_needed");
    const RequestOutput o = poll_or_fail(engine, request_id);
    const SampleOutput& s = sample_or_fail(o, index);
    if (finish_reason) *finish_reason = s.finished ? static_cast<int32_t>(s.reason) : -1;
    capi::copy_out(s.tokens.data(), s.tokens.size(), sizeof(int32_t), false, tokens, cap, n_needed,
                   "dsv4_engine_get_output");
  });
}

dsv4_status dsv4_engine_get_text(const dsv4_engine* engine, uint64_t request_id, int32_t index, char* buf, size_t cap,
                                 size_t* n_needed) {
  return guard([&] {
    require(engine, "engine");
    require(n_needed, "n_needed");
    const RequestOutput o = poll_or_fail(engine, request_id);
    const SampleOutput& s = sample_or_fail(o, index);
    capi::copy_out(s.text.data(), s.text.size(), 1, true, buf, cap, n_needed, "dsv4_engine_get_text");
  });
}

dsv4_status dsv4_engine_get_logprobs(const dsv4_engine* engine, uint64_t request_id, int32_t index,
                                     dsv4_token_logprob* buf, size_t cap, size_t* n_needed) {
  return guard([&] {
    require(engine, "engine");
    require(n_needed, "n_needed");
    const RequestOutput o = poll_or_fail(engine, request_id);
    const SampleOutput& s = sample_or_fail(o, index);
    // Entries come only with logprobs >= 0, each with the request's k alternatives (fewer only for
    // a vocabulary smaller than k: padded).
    size_t k = 0;
    for (const SampleResult& r : s.logprobs) k = std::max(k, r.top.size());
    std::vector<dsv4_token_logprob> out;
    if (!s.logprobs.empty()) {
      const size_t stride = k + 1;
      out.assign(s.logprobs.size() * stride, {-1, -std::numeric_limits<float>::infinity()});
      for (size_t t = 0; t < s.logprobs.size(); ++t) {
        const SampleResult& r = s.logprobs[t];
        out[t * stride] = {r.id, r.logprob};
        for (size_t j = 0; j < r.top.size(); ++j)
          out[t * stride + 1 + j] = {r.top[j].id, r.top[j].logprob};
      }
    }
    capi::copy_out(out.data(), out.size(), sizeof(dsv4_token_logprob), false, buf, cap, n_needed,
                   "dsv4_engine_get_logprobs");
  });
}

dsv4_status dsv4_engine_get_error(const dsv4_engine* engine, uint64_t request_id, int32_t index, char* buf,
                                  size_t cap, size_t* n_needed) {
  return guard([&] {
    require(engine, "engine");
    require(n_needed, "n_needed");
    const RequestOutput o = poll_or_fail(engine, request_id);
    const SampleOutput& s = sample_or_fail(o, index);
    const std::string& err = s.finished && s.reason == StopReason::error ? s.error : std::string();
    capi::copy_out(err.data(), err.size(), 1, true, buf, cap, n_needed, "dsv4_engine_get_error");
  });
}

dsv4_status dsv4_engine_get_request_info(const dsv4_engine* engine, uint64_t request_id, dsv4_request_info* out) {
  return guard([&] {
    require(engine, "engine");
    require(out, "out");
    const RequestOutput o = poll_or_fail(engine, request_id);
    dsv4_request_info i{};
    i.n_prompt_tokens = static_cast<int64_t>(o.prompt.size());
    i.n = static_cast<int32_t>(o.samples.size());
    for (const SampleOutput& s : o.samples) i.n_finished += s.finished ? 1 : 0;
    i.finished = o.finished;
    i.preemptions = o.timings.preemptions;
    i.queue_seconds = o.timings.queue_seconds;
    i.ttft_seconds = o.timings.ttft_seconds;
    i.e2e_seconds = o.timings.e2e_seconds;
    *out = i;
  });
}

dsv4_status dsv4_engine_release(dsv4_engine* engine, uint64_t request_id) {
  return guard([&] {
    require(engine, "engine");
    not_in_callback("dsv4_engine_release");
    const RequestOutput o = poll_or_fail(engine, request_id);
    if (!o.finished)
      fail(Status::invalid_argument, "request {} is still running (cancel it and wait before releasing)", request_id);
    sched_of(engine).take(request_id);  // finished = every event delivered: no callback of it is to come
    std::lock_guard<std::mutex> lk(engine->mu);
    engine->final_events.erase(request_id);
  });
}

dsv4_status dsv4_engine_get_stats(const dsv4_engine* engine, dsv4_engine_stats* out) {
  return guard([&] {
    require(engine, "engine");
    require(out, "out");
    const SchedulerStats s = sched_of(engine).stats();
    dsv4_engine_stats c{};
    c.running = s.running;
    c.waiting = s.waiting;
    c.finished_requests = s.finished_requests;
    c.cancelled_requests = s.cancelled_requests;
    c.failed_requests = s.failed_requests;
    c.prompt_tokens = s.prompt_tokens;
    c.generated_tokens = s.generated_tokens;
    c.steps = s.steps;
    c.preemptions = s.preemptions;
    c.state_used_bytes = s.state_used;
    c.state_budget_bytes = s.state_budget;
    c.last_step_seconds = s.last_step_seconds;
    *out = c;
  });
}

}  // extern "C"
