// The continuous-batching scheduler: many requests over one Backend (backend.hpp), one step at a
// time. Every step
//   1. applies cancellations (from any thread since the last step);
//   2. keeps every running sequence going: one decode token each (token = the id the backend
//      sampled for it in the previous step), or its next prefill chunk;
//   3. admits waiting requests first-come-first-served while the step's token budget
//      (max_num_batched_tokens), max_num_seqs and the free state memory allow — a prompt is
//      prefilled in chunks across steps, interleaved with the decodes of the others;
//   4. runs the step (the backend samples inside it), streams each new token through the stop
//      matcher of generate.hpp (EOS, stop ids, stop strings held back UTF-8-safely, max tokens,
//      context end) and the request's callback, and releases finished sequences.
// Memory policy (SchedulerOptions::preemption):
//   recompute (default, as vLLM): admit when the prompt's state fits; when a decode step needs a
//     page that is not free, preempt the most recently admitted running sequence (its state is
//     released; it waits at the head of the queue and is recomputed from prompt + generated tokens
//     when memory frees up — its sampler state is kept, so its output is what it would have been);
//   reserve: admit only when prompt + max_tokens fits for every sample (n), never preempt.
// A request that can never fit (more than the whole budget, or longer than max_model_len) is
// refused at submit() with Error(out_of_memory / context_overflow / invalid_argument); a full
// queue (max_waiting) gives Error(busy) with a "queue full" message (a server's 429/503).
// `n` > 1 samples share the prompt's prefill: the prompt minus its last token is prefilled once,
// then the sequence is forked n − 1 times and each fork runs the last token with its own sampler.
//
// Threading: submit, cancel, stats, poll and take may be called from any thread. step() and
// run_until_idle() are called by one thread at a time (the "engine loop"), or start() runs that
// loop on a thread of its own until stop(). Callbacks run on the loop thread, between steps.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/backend.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/sampler.hpp"

namespace dsv4 {

class Tokenizer;
using RequestId = uint64_t;

struct RequestParams {
  SamplerParams sampling;  // seed: sample i of n uses seed + i
  StopParams stop;         // max_tokens (≥ 1 here), EOS, stop ids, stop strings
  int n = 1;               // parallel samples of one prompt, 1..max_n
};

// One streamed event: a token of sample `index` (token ≥ 0) with the text that became final with
// it, and/or the end of that sample (finished set).
struct RequestEvent {
  RequestId request = 0;
  int index = 0;
  int32_t token = -1;             // −1: no token (a finish without one: cancel, error, refusal)
  std::string_view piece;
  const SampleResult* logprobs = nullptr;  // when sampling.logprobs ≥ 0
  std::optional<StopReason> finished;
  std::string_view error;         // with finished == error
};
using RequestCallback = std::function<void(const RequestEvent&)>;

struct Request {
  std::vector<int32_t> prompt;  // ≥ 1 token
  RequestParams params;
  RequestCallback on_event;     // may be empty (collect the output with poll / take)
};

struct RequestTimings {
  double queue_seconds = 0;      // submit → first scheduled
  double ttft_seconds = 0;       // submit → first token (of sample 0)
  double e2e_seconds = 0;        // submit → last sample finished
  std::vector<double> itl_seconds;  // sample 0: time between consecutive tokens
  int preemptions = 0;
};

struct SampleOutput {
  int index = 0;
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<SampleResult> logprobs;
  StopReason reason = StopReason::max_tokens;
  std::string error;             // reason == error
  bool finished = false;
};

struct RequestOutput {
  RequestId id = 0;
  std::vector<int32_t> prompt;
  std::vector<SampleOutput> samples;  // n entries
  RequestTimings timings;
  bool finished = false;
};

enum class Preemption { recompute, reserve };

struct SchedulerOptions {
  int max_num_seqs = 256;               // sequences in one step (vLLM --max-num-seqs)
  int max_num_batched_tokens = 2048;    // tokens in one step, decodes + prefill chunks
  int64_t max_model_len = 0;            // per-sequence context; 0 = the config's max_position_embeddings
  int max_waiting = 0;                  // queued requests beyond which submit refuses; 0 = unlimited
  int max_n = 16;                       // largest n
  Preemption preemption = Preemption::recompute;
};

struct SchedulerStats {
  int64_t running = 0;           // sequences with state in the backend
  int64_t waiting = 0;           // requests (or preempted samples) not yet running
  int64_t finished_requests = 0;
  int64_t cancelled_requests = 0;
  int64_t failed_requests = 0;
  int64_t prompt_tokens = 0;     // tokens prefilled (recomputation included)
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  size_t state_used = 0, state_budget = 0;  // bytes (budget 0 = unlimited)
  double last_step_seconds = 0;
};

class Scheduler {
 public:
  // `tok` may be null (then no text, no stop strings). The backend must outlive the scheduler.
  Scheduler(Backend& backend, const Tokenizer* tok, const SchedulerOptions& opt = {});
  ~Scheduler();  // stops the loop thread; unfinished requests end as cancelled
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates and queues a request (Errors as described above; nothing queued on error).
  RequestId submit(Request r);
  // Cancels a queued or running request at the next step (its samples end with reason
  // cancelled). Unknown or finished ids are ignored; returns whether the id was live.
  bool cancel(RequestId id);

  // One step; false when there was nothing to do.
  bool step();
  // Steps until no request is queued or running.
  void run_until_idle();
  // The engine loop on its own thread (idle: waits for submit, no spinning).
  void start();
  void stop();

  // A snapshot of the request so far (nullopt for an unknown id); take() also forgets a finished
  // request (outputs of finished requests are kept until taken). A request counts as finished
  // once its last event has been handed to its callback.
  std::optional<RequestOutput> poll(RequestId id) const;
  std::optional<RequestOutput> take(RequestId id);
  // Blocks until the request finished (start() must be running, or another thread stepping).
  RequestOutput wait(RequestId id);

  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return opt_; }

 private:
  struct Seq;
  struct Req;
  struct Event;
  struct Planned;
  void finish_seq(Seq& s, StopReason why, const std::string& error, std::vector<Event>& ev);
  void drop_state(Seq& s);
  void requeue_front(Seq& s);
  void fork_children(Seq& parent, std::vector<Event>& ev);
  void on_token(Seq& s, const SampleResult& r, std::vector<Event>& ev);
  RequestOutput snapshot(const Req& r) const;
  size_t reserve_bytes(const Req& r) const;

  Backend& be_;
  const Tokenizer* tok_;
  SchedulerOptions opt_;
  int64_t max_len_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // work arrived / a request finished
  std::map<RequestId, std::unique_ptr<Req>> reqs_;
  std::deque<Seq*> waiting_;         // FCFS (preempted sequences go back to the front)
  std::vector<Seq*> running_;        // in admission order
  size_t reserved_ = 0;              // Preemption::reserve: worst-case bytes of admitted requests
  std::vector<RequestId> finished_now_;  // finished in the running step, events not yet delivered
  int64_t pending_cancels_ = 0;          // cancel() calls not yet applied by a step
  RequestId next_id_ = 1;
  SchedulerStats stats_;
  std::thread loop_;
  bool stop_loop_ = false;
  bool stepping_ = false;
};

}  // namespace dsv4
