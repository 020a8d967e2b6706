// The continuous-batching scheduler (contract in include/dsv4/scheduler.hpp). Bookkeeping is
// under one mutex; the backend step itself runs with the mutex released, so submit / cancel /
// poll from other threads never wait for a forward pass. Callbacks run after the step, unlocked,
// from events collected while it was processed.
#include "dsv4/scheduler.hpp"

#include <algorithm>
#include <chrono>

#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4 {
namespace {
using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
}  // namespace

struct Scheduler::Seq {
  Req* req = nullptr;
  int index = 0;
  SeqHandle h = 0;  // 0: no state in the backend
  enum class Phase { waiting, fork_wait, prefill, decode, done } phase = Phase::waiting;
  // Tokens the backend must hold before this sequence samples again: the prompt (minus its last
  // token while it is the shared prefix of n samples), plus every generated token after a
  // preemption. `fed` of them are in the backend.
  std::vector<int32_t> feed;
  size_t fed = 0;
  bool shared_prefix = false;  // the parent of n > 1 samples, not yet forked
  std::unique_ptr<Sampler> sampler;
  SamplerState state;
  std::unique_ptr<StopMatcher> matcher;
  SampleOutput out;
  Clock::time_point last_token_at;
};

struct Scheduler::Req {
  RequestId id = 0;
  std::vector<int32_t> prompt;
  RequestParams params;
  std::shared_ptr<RequestCallback> cb;
  std::vector<std::unique_ptr<Seq>> seqs;
  Clock::time_point submitted;
  RequestTimings timings;
  size_t reserved = 0;  // Preemption::reserve
  int done = 0;
  // finished: every sample is done; delivered: and its events have been handed to the callback —
  // only then do wait / poll / take report it finished (a host may free its callback's data).
  bool cancel = false, scheduled = false, first_token = false, finished = false, failed = false, delivered = false;
};

struct Scheduler::Event {
  std::shared_ptr<RequestCallback> cb;
  RequestId id = 0;
  int index = 0;
  int32_t token = -1;
  std::string piece;
  std::optional<SampleResult> logprobs;
  std::optional<StopReason> finished;
  std::string error;
};

struct Scheduler::Planned {
  Seq* s = nullptr;
  ForwardChunk chunk;
  size_t n = 0;           // tokens
  bool prefill = false;   // else a decode (from_last_sample)
  bool admitted = false;  // created in this step
};

Scheduler::Scheduler(Backend& backend, const Tokenizer* tok, const SchedulerOptions& opt)
    : be_(backend), tok_(tok), opt_(opt) {
  const int64_t cfg_max = be_.config().max_position_embeddings;
  if (opt_.max_num_seqs < 1) fail(Status::invalid_argument, "scheduler: max_num_seqs {} must be ≥ 1", opt_.max_num_seqs);
  if (opt_.max_num_batched_tokens < 1)
    fail(Status::invalid_argument, "scheduler: max_num_batched_tokens {} must be ≥ 1", opt_.max_num_batched_tokens);
  if (opt_.max_model_len < 0 || opt_.max_model_len > cfg_max)
    fail(Status::invalid_argument, "scheduler: max_model_len {} must be in [0, {}] (0 = the config's)",
         opt_.max_model_len, cfg_max);
  if (opt_.max_waiting < 0) fail(Status::invalid_argument, "scheduler: max_waiting {} must be ≥ 0", opt_.max_waiting);
  if (opt_.max_n < 1 || opt_.max_n > 1024) fail(Status::invalid_argument, "scheduler: max_n {} must be in [1, 1024]", opt_.max_n);
  max_len_ = opt_.max_model_len ? opt_.max_model_len : cfg_max;
}

Scheduler::~Scheduler() {
  stop();
  std::vector<Event> ev;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [id, r] : reqs_)
      for (auto& s : r->seqs) finish_seq(*s, StopReason::cancelled, {}, ev);
  }
  for (const Event& e : ev)
    if (e.cb && *e.cb) {
      RequestEvent re{e.id, e.index, e.token, e.piece, nullptr, e.finished, e.error};
      (*e.cb)(re);
    }
}

size_t Scheduler::reserve_bytes(const Req& r) const {
  const StateCost cost = be_.memory().cost;
  const int64_t worst = std::min<int64_t>(max_len_, static_cast<int64_t>(r.prompt.size()) + r.params.stop.max_tokens);
  return static_cast<size_t>(r.params.n) * cost.bytes_for(worst);
}

RequestId Scheduler::submit(Request in) {
  const int64_t L = static_cast<int64_t>(in.prompt.size());
  const RequestParams& p = in.params;
  if (L == 0) fail(Status::invalid_argument, "request: empty prompt");
  const int32_t V = be_.config().vocab_size;
  for (int64_t i = 0; i < L; ++i)
    if (in.prompt[static_cast<size_t>(i)] < 0 || in.prompt[static_cast<size_t>(i)] >= V)
      fail(Status::invalid_argument, "request: prompt token {} at index {} is outside the vocabulary [0, {})",
           in.prompt[static_cast<size_t>(i)], i, V);
  if (p.n < 1 || p.n > opt_.max_n) fail(Status::invalid_argument, "request: n {} must be in [1, {}]", p.n, opt_.max_n);
  // As vLLM: a request generates at least one token (0 would still sample one at the prompt's end).
  if (p.stop.max_tokens < 1) fail(Status::invalid_argument, "request: max_tokens {} must be ≥ 1", p.stop.max_tokens);
  if (L > max_len_ || (L == max_len_ && p.stop.max_tokens > 0))
    fail(Status::context_overflow,
         "request: the prompt has {} tokens; max_model_len {} leaves room for {} generated tokens", L, max_len_,
         std::max<int64_t>(0, max_len_ - L));
  auto req = std::make_unique<Req>();
  req->prompt = std::move(in.prompt);
  req->params = p;
  req->cb = std::make_shared<RequestCallback>(std::move(in.on_event));
  for (int i = 0; i < p.n; ++i) {  // validates the sampler and stop parameters (throws)
    auto s = std::make_unique<Seq>();
    s->req = req.get();
    s->index = i;
    SamplerParams sp = p.sampling;
    sp.seed = p.sampling.seed + static_cast<uint64_t>(i);
    s->sampler = std::make_unique<Sampler>(sp);
    s->state = SamplerState(sp.seed, SamplerState::needs_counts(sp));
    s->state.add_prompt(req->prompt);
    s->matcher = std::make_unique<StopMatcher>(tok_, p.stop);
    s->out.index = i;
    req->seqs.push_back(std::move(s));
  }
  const StateMemory mem = be_.memory();
  if (opt_.preemption == Preemption::reserve) req->reserved = reserve_bytes(*req);
  const size_t need = opt_.preemption == Preemption::reserve ? req->reserved
                                                             : static_cast<size_t>(p.n) * mem.cost.bytes_for(L);
  if (mem.budget && need > mem.budget)
    fail(Status::out_of_memory, "request: needs {} bytes of sequence state ({} × {} tokens{}); the whole budget is {}",
         need, p.n, opt_.preemption == Preemption::reserve ? "prompt + max_tokens" : "prompt", "", mem.budget);

  std::unique_lock<std::mutex> lk(mu_);
  if (opt_.max_waiting > 0) {
    int64_t queued = 0;
    for (const Seq* s : waiting_) queued += s->index == 0 ? 1 : 0;
    if (queued >= opt_.max_waiting)
      fail(Status::busy, "request: the queue is full ({} requests waiting, max_waiting {}); retry later", queued,
           opt_.max_waiting);
  }
  req->id = next_id_++;
  req->submitted = Clock::now();
  const bool share = p.n > 1 && L > 1;
  for (auto& s : req->seqs) {
    if (share && s->index > 0) {
      s->phase = Seq::Phase::fork_wait;
      continue;
    }
    s->feed.assign(req->prompt.begin(), req->prompt.end() - (share ? 1 : 0));
    s->shared_prefix = share;
    waiting_.push_back(s.get());
  }
  const RequestId id = req->id;
  reqs_.emplace(id, std::move(req));
  lk.unlock();
  cv_.notify_all();
  return id;
}

bool Scheduler::cancel(RequestId id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = reqs_.find(id);
  if (it == reqs_.end() || it->second->finished) return false;
  if (!it->second->cancel) ++pending_cancels_;
  it->second->cancel = true;
  cv_.notify_all();
  return true;
}

void Scheduler::drop_state(Seq& s) {
  if (s.h) {
    be_.release_sequence(s.h);
    s.h = 0;
  }
  running_.erase(std::remove(running_.begin(), running_.end(), &s), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &s), waiting_.end());
}

void Scheduler::requeue_front(Seq& s) {
  drop_state(s);
  Req& r = *s.req;
  s.feed.assign(r.prompt.begin(), r.prompt.end() - (s.shared_prefix ? 1 : 0));
  s.feed.insert(s.feed.end(), s.out.tokens.begin(), s.out.tokens.end());
  s.fed = 0;
  s.phase = Seq::Phase::waiting;
  waiting_.push_front(&s);
}

void Scheduler::finish_seq(Seq& s, StopReason why, const std::string& error, std::vector<Event>& ev) {
  if (s.phase == Seq::Phase::done) return;
  Req& r = *s.req;
  const bool was_parent = s.shared_prefix;
  const std::string rest(s.matcher->finish(why));
  if (s.out.tokens.empty() || !rest.empty() || why == StopReason::cancelled || why == StopReason::error) {
    Event e;
    e.cb = r.cb;
    e.id = r.id;
    e.index = s.index;
    e.piece = rest;
    e.finished = s.matcher->reason();
    e.error = error;
    ev.push_back(std::move(e));
  }
  s.out.text = s.matcher->text();
  s.out.reason = s.matcher->reason();
  s.out.error = error;
  s.out.finished = true;
  drop_state(s);
  s.phase = Seq::Phase::done;
  if (was_parent && why != StopReason::cancelled)  // the samples waiting for its prefix go on alone
    for (auto& c : r.seqs)
      if (c->phase == Seq::Phase::fork_wait) {
        c->feed = r.prompt;
        c->fed = 0;
        c->phase = Seq::Phase::waiting;
        waiting_.push_front(c.get());
      }
  if (why == StopReason::cancelled)
    for (auto& c : r.seqs)
      if (c->phase == Seq::Phase::fork_wait) finish_seq(*c, why, error, ev);
  if (why == StopReason::error) r.failed = true;
  if (++r.done == r.params.n) {
    r.finished = true;
    finished_now_.push_back(r.id);
    r.timings.e2e_seconds = seconds(r.submitted, Clock::now());
    reserved_ -= std::min(reserved_, r.reserved);
    ++stats_.finished_requests;
    if (r.cancel) ++stats_.cancelled_requests;
    if (r.failed) ++stats_.failed_requests;
  }
}

void Scheduler::on_token(Seq& s, const SampleResult& sr, std::vector<Event>& ev) {
  Req& r = *s.req;
  const auto now = Clock::now();
  const int64_t pos = be_.sequence_position(s.h);  // the sampled token would take this position
  const StopMatcher::Verdict v = s.matcher->push(sr.id, pos + 1 >= max_len_);
  s.out.tokens.push_back(sr.id);
  if (r.params.sampling.logprobs >= 0) s.out.logprobs.push_back(sr);
  ++stats_.generated_tokens;
  if (s.index == 0) {
    if (!r.first_token) r.timings.ttft_seconds = seconds(r.submitted, now);
    else r.timings.itl_seconds.push_back(seconds(s.last_token_at, now));
    r.first_token = true;
  }
  s.last_token_at = now;
  Event e;
  e.cb = r.cb;
  e.id = r.id;
  e.index = s.index;
  e.token = sr.id;
  e.piece = std::string(v.piece);
  if (r.params.sampling.logprobs >= 0) e.logprobs = sr;
  e.finished = v.stop;
  ev.push_back(std::move(e));
  s.phase = Seq::Phase::decode;
  if (v.stop) finish_seq(s, *v.stop, {}, ev);  // text already flushed: no second event
}

void Scheduler::fork_children(Seq& parent, std::vector<Event>& ev) {
  (void)ev;
  Req& r = *parent.req;
  parent.feed.push_back(r.prompt.back());
  parent.shared_prefix = false;
  for (auto& c : r.seqs) {
    if (c->phase != Seq::Phase::fork_wait) continue;
    c->feed = r.prompt;
    c->phase = Seq::Phase::waiting;
    SeqHandle h = 0;
    if (running_.size() < static_cast<size_t>(opt_.max_num_seqs)) {
      try {
        h = be_.fork_sequence(parent.h);
      } catch (const Error&) {  // no memory for the copy: it recomputes the prompt when admitted
        h = 0;
      }
    }
    if (h) {
      c->h = h;
      c->fed = r.prompt.size() - 1;
      c->phase = Seq::Phase::prefill;
      running_.push_back(c.get());
    } else {
      c->fed = 0;
      waiting_.push_front(c.get());
    }
  }
}

bool Scheduler::step() {
  std::vector<Event> ev;
  std::vector<Planned> plan;
  std::unique_lock<std::mutex> lk(mu_);
  if (stepping_) return false;
  stepping_ = true;
  const auto t0 = Clock::now();

  // 1. Cancellations since the last step (the scan only when there are any).
  if (pending_cancels_ > 0) {
    for (auto& [id, r] : reqs_)
      if (r->cancel && !r->finished)
        for (auto& s : r->seqs) finish_seq(*s, StopReason::cancelled, {}, ev);
    pending_cancels_ = 0;
  }

  // 2. The step: decodes, then running prefills, then admissions (FCFS) within the budget.
  int64_t budget = opt_.max_num_batched_tokens;
  for (Seq* s : running_)
    if (s->phase == Seq::Phase::decode && budget > 0) {
      Planned p;
      p.s = s;
      p.n = 1;
      p.chunk.from_last_sample = true;
      plan.push_back(p);
      --budget;
    }
  auto plan_prefill = [&](Seq* s, bool admitted) {
    const size_t n = std::min<size_t>(s->feed.size() - s->fed, static_cast<size_t>(budget));
    Planned p;
    p.s = s;
    p.n = n;
    p.prefill = true;
    p.admitted = admitted;
    p.chunk.tokens = std::span<const int32_t>(s->feed).subspan(s->fed, n);
    plan.push_back(p);
    budget -= static_cast<int64_t>(n);
  };
  for (Seq* s : running_)
    if (s->phase == Seq::Phase::prefill && budget > 0) plan_prefill(s, false);
  StateMemory mem = be_.memory();
  size_t free_est = mem.free;
  while (!waiting_.empty() && budget > 0 && running_.size() < static_cast<size_t>(opt_.max_num_seqs)) {
    Seq* s = waiting_.front();
    Req& r = *s->req;
    const size_t need = mem.cost.bytes_for(static_cast<int64_t>(s->feed.size()));
    const bool fits = opt_.preemption == Preemption::reserve
                          ? r.scheduled || !mem.budget || reserved_ + r.reserved <= mem.budget
                          : need <= free_est;
    if (!fits) {
      if (running_.empty() && plan.empty()) {  // nothing will ever free memory for it
        finish_seq(*s, StopReason::error,
                   fmt::format("sequence state: {} bytes needed, {} free with nothing running (the memory is held "
                               "outside the scheduler)",
                               need, free_est),
                   ev);
        continue;
      }
      break;
    }
    try {
      s->h = be_.create_sequence(max_len_);
    } catch (const Error& e) {
      if (e.status() != Status::out_of_memory) throw;
      break;
    }
    if (!r.scheduled) {
      r.scheduled = true;
      r.timings.queue_seconds = seconds(r.submitted, Clock::now());
      reserved_ += r.reserved;
    }
    waiting_.pop_front();
    running_.push_back(s);
    s->phase = Seq::Phase::prefill;
    s->fed = 0;
    free_est -= std::min(free_est, need);
    plan_prefill(s, true);
  }
  for (Planned& p : plan) {
    p.chunk.seq = p.s->h;
    const bool completes = p.prefill && p.s->fed + p.n == p.s->feed.size();
    if (!p.prefill || (completes && !p.s->shared_prefix)) {
      p.chunk.sampler = p.s->sampler.get();
      p.chunk.sampler_state = &p.s->state;
    }
  }

  // 3. Run it (unlocked). Out of state memory: give back this step's admissions first, then
  //    preempt the newest running sequence (recompute), until the step fits.
  StepResult res;
  while (!plan.empty()) {
    std::vector<ForwardChunk> chunks;
    chunks.reserve(plan.size());
    for (const Planned& p : plan) chunks.push_back(p.chunk);
    lk.unlock();
    std::optional<Error> err;
    try {
      res = be_.wait(be_.submit(chunks));
    } catch (const Error& e) {
      err = e;
    } catch (const std::exception& e) {
      err = Error(Status::internal, e.what());
    }
    lk.lock();
    if (!err) break;
    if (err->status() == Status::out_of_memory) {
      auto victim = std::find_if(plan.rbegin(), plan.rend(), [](const Planned& p) { return p.admitted; });
      if (victim == plan.rend() && opt_.preemption == Preemption::recompute && plan.size() > 1) {
        // The newest running sequence in admission order among the planned ones.
        victim = std::max_element(plan.rbegin(), plan.rend(), [&](const Planned& a, const Planned& b) {
          return std::find(running_.begin(), running_.end(), a.s) < std::find(running_.begin(), running_.end(), b.s);
        });
        ++victim->s->req->timings.preemptions;
        ++stats_.preemptions;
      }
      if (victim != plan.rend()) {
        requeue_front(*victim->s);
        plan.erase(std::next(victim).base());
        continue;
      }
    }
    // Anything else (or one sequence alone out of memory): those sequences end with the error.
    for (Planned& p : plan) finish_seq(*p.s, StopReason::error, err->what(), ev);
    plan.clear();
  }

  // 4. Results: advance prefills, fork shared prefixes, stream sampled tokens.
  for (size_t i = 0; i < plan.size(); ++i) {
    Planned& p = plan[i];
    Seq& s = *p.s;
    const ChunkResult& cr = res.chunks.at(i);
    if (cr.status != ChunkStatus::ok) {
      finish_seq(s, StopReason::error, cr.error, ev);
      continue;
    }
    try {
      if (p.prefill) {
        s.fed += p.n;
        stats_.prompt_tokens += static_cast<int64_t>(p.n);
        if (s.fed < s.feed.size()) continue;
        if (s.shared_prefix) {
          fork_children(s, ev);
          continue;
        }
      }
      on_token(s, cr.sample, ev);
    } catch (const std::exception& e) {  // never leave the loop half-way: this sample ends
      finish_seq(s, StopReason::error, e.what(), ev);
    }
  }
  const bool did = !plan.empty() || !ev.empty();
  if (!plan.empty()) ++stats_.steps;
  stats_.last_step_seconds = seconds(t0, Clock::now());
  std::vector<RequestId> finished = std::move(finished_now_);
  finished_now_.clear();
  lk.unlock();
  for (const Event& e : ev)
    if (e.cb && *e.cb) {
      RequestEvent re{e.id, e.index, e.token, e.piece, e.logprobs ? &*e.logprobs : nullptr, e.finished, e.error};
      (*e.cb)(re);
    }
  lk.lock();
  for (RequestId id : finished)
    if (auto it = reqs_.find(id); it != reqs_.end()) it->second->delivered = true;
  stepping_ = false;
  lk.unlock();
  cv_.notify_all();
  return did;
}

void Scheduler::run_until_idle() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (waiting_.empty() && running_.empty() && pending_cancels_ == 0) return;
    }
    step();
  }
}

void Scheduler::start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (loop_.joinable()) return;
  stop_loop_ = false;
  loop_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] {
          if (stop_loop_) return true;
          return !waiting_.empty() || !running_.empty() || pending_cancels_ > 0;
        });
        if (stop_loop_) return;
      }
      step();
    }
  });
}

void Scheduler::stop() {
  std::thread t;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_loop_ = true;
    t = std::move(loop_);
  }
  cv_.notify_all();
  if (t.joinable()) t.join();
}

RequestOutput Scheduler::snapshot(const Req& r) const {
  RequestOutput o;
  o.id = r.id;
  o.prompt = r.prompt;
  o.timings = r.timings;
  o.finished = r.delivered;
  for (const auto& s : r.seqs) {
    o.samples.push_back(s->out);
    if (!s->out.finished) o.samples.back().text = s->matcher->text();
  }
  return o;
}

std::optional<RequestOutput> Scheduler::poll(RequestId id) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = reqs_.find(id);
  if (it == reqs_.end()) return std::nullopt;
  return snapshot(*it->second);
}

std::optional<RequestOutput> Scheduler::take(RequestId id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = reqs_.find(id);
  if (it == reqs_.end()) return std::nullopt;
  RequestOutput o = snapshot(*it->second);
  if (it->second->delivered) reqs_.erase(it);
  return o;
}

RequestOutput Scheduler::wait(RequestId id) {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    auto it = reqs_.find(id);
    if (it == reqs_.end()) fail(Status::invalid_argument, "wait: unknown request {}", id);
    if (it->second->delivered) return snapshot(*it->second);
    if (!loop_.joinable() && !stepping_) {  // nobody else drives the engine: step here
      lk.unlock();
      step();
      lk.lock();
      continue;
    }
    cv_.wait(lk);
  }
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  SchedulerStats s = stats_;
  s.running = static_cast<int64_t>(running_.size());
  s.waiting = static_cast<int64_t>(waiting_.size());
  for (const auto& [id, r] : reqs_)
    for (const auto& q : r->seqs) s.waiting += q->phase == Seq::Phase::fork_wait ? 1 : 0;
  const StateMemory m = be_.memory();
  s.state_used = m.used;
  s.state_budget = m.budget;
  return s;
}

}  // namespace dsv4
