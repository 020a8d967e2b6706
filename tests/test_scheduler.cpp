// The continuous-batching scheduler (include/dsv4/scheduler.hpp) on the CPU backend with a
// generated small model (and on the null backend for scale): many concurrent requests with
// chunked prefill and cancellations give every survivor its solo greedy tokens; preemption under a
// tiny state budget and reserve-mode admission keep outputs exact (sampling included); n samples
// share a prefill; refusals name their reason; streaming pieces add up to the text with stop
// strings held back; a fault inside a step fails only its request; memory returns to zero.
#include <algorithm>
#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "catch.hpp"
#include "cpu/fault_injection.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/error.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/null_backend.hpp"
#include "dsv4/scheduler.hpp"
#include "dsv4/tokenizer.hpp"
#include "small_model.hpp"

namespace {
using dsv4::Request;
using dsv4::Scheduler;
using dsv4::SchedulerOptions;
using dsv4::StopReason;

std::vector<int32_t> random_ids(size_t n, int vocab, std::mt19937& g) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// The same request run alone through Session + generate (the single-sequence path).
std::vector<int32_t> solo(const dsv4::Model& m, const std::vector<int32_t>& prompt, const dsv4::RequestParams& p,
                          int index = 0, int64_t max_ctx = 4096) {
  auto s = m.create_session(max_ctx);
  dsv4::GenerateParams gp;
  gp.max_new_tokens = p.stop.max_tokens;
  gp.sampler = p.sampling;
  gp.sampler.seed = p.sampling.seed + static_cast<uint64_t>(index);
  gp.stop_on_eos = p.stop.stop_on_eos;
  gp.eos_id = p.stop.eos_id;
  gp.stop_token_ids = p.stop.stop_token_ids;
  gp.stop_strings = p.stop.stop_strings;
  return dsv4::generate(*s, m.tokenizer(), prompt, gp).tokens;
}

dsv4::RequestParams greedy(int max_tokens) {
  dsv4::RequestParams p;
  p.sampling.temperature = 0.0f;
  p.stop.max_tokens = max_tokens;
  p.stop.stop_on_eos = false;  // a random model says EOS whenever: keep lengths predictable
  return p;
}
}  // namespace

TEST_CASE("64 concurrent requests with chunked prefill and cancellations match their solo runs", "[scheduler]") {
  auto m = dsv4_test::load_small();
  const int V = m->config().vocab_size;
  std::mt19937 g(21);
  struct Case {
    std::vector<int32_t> prompt;
    dsv4::RequestParams p;
    std::vector<int32_t> want;
    int cancel_after = 0;  // cancel from the callback after this many tokens (0 = never)
    bool cancel_outside = false;
  };
  std::vector<Case> cases(64);
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    c.prompt = random_ids(1 + g() % 60, V, g);
    c.p = greedy(1 + static_cast<int>(g() % 10));
    c.want = solo(*m, c.prompt, c.p);
    if (i % 7 == 3) c.cancel_after = 1 + static_cast<int>(g() % 3);
    if (i % 11 == 5) c.cancel_outside = true;
  }
  SchedulerOptions so;
  so.max_num_seqs = 24;
  so.max_num_batched_tokens = 48;  // long prompts prefill over several steps, beside decodes
  Scheduler sched(m->backend(), nullptr, so);
  sched.start();
  std::vector<dsv4::RequestId> ids(cases.size());
  std::vector<std::atomic<int>> seen(cases.size());
  std::atomic<int> finish_events{0};
  // Submitted from four threads at once.
  std::vector<std::thread> th;
  for (int t = 0; t < 4; ++t)
    th.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < cases.size(); i += 4) {
        Request r;
        r.prompt = cases[i].prompt;
        r.params = cases[i].p;
        r.on_event = [&, i](const dsv4::RequestEvent& e) {
          if (e.token >= 0 && ++seen[i] == cases[i].cancel_after) sched.cancel(e.request);
          if (e.finished) ++finish_events;
        };
        ids[i] = sched.submit(std::move(r));
      }
    });
  for (auto& t : th) t.join();
  for (size_t i = 0; i < cases.size(); ++i)
    if (cases[i].cancel_outside) sched.cancel(ids[i]);
  int survivors = 0, cancelled = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const dsv4::RequestOutput o = sched.wait(ids[i]);
    REQUIRE(o.finished);
    REQUIRE(o.samples.size() == 1);
    const auto& s = o.samples[0];
    INFO("request " << i << " prompt " << cases[i].prompt.size() << " reason " << dsv4::stop_reason_name(s.reason));
    if (s.reason == StopReason::cancelled) {
      ++cancelled;
      CHECK((cases[i].cancel_after || cases[i].cancel_outside));
      REQUIRE(s.tokens.size() <= cases[i].want.size());
      CHECK(std::equal(s.tokens.begin(), s.tokens.end(), cases[i].want.begin()));  // a prefix of the solo run
    } else {
      ++survivors;
      CHECK(s.reason == StopReason::max_tokens);
      CHECK(s.tokens == cases[i].want);
    }
    CHECK(o.timings.ttft_seconds <= o.timings.e2e_seconds);
    CHECK(sched.take(ids[i]).has_value());
  }
  CHECK(survivors > 40);
  CHECK(cancelled > 0);
  CHECK(finish_events == 64);
  const auto st = sched.stats();
  CHECK(st.running == 0);
  CHECK(st.waiting == 0);
  CHECK(st.state_used == 0);
  CHECK(st.finished_requests == 64);
  CHECK(st.cancelled_requests == cancelled);
  CHECK(m->backend().memory().sequences == 0);
}

TEST_CASE("preemption under a tiny state budget recomputes exactly (greedy and seeded sampling)", "[scheduler]") {
  auto probe = dsv4_test::load_small();
  const dsv4::StateCost cost = probe->backend().memory().cost;
  for (auto mode : {dsv4::Preemption::recompute, dsv4::Preemption::reserve}) {
    dsv4::LoadOptions o;
    o.state_budget_bytes = 3 * cost.bytes_for(128) + cost.page.total();  // 3 one-page sequences and a page
    auto m = dsv4_test::load_small(o);
    const int V = m->config().vocab_size;
    std::mt19937 g(22);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<dsv4::RequestParams> params;
    std::vector<std::vector<int32_t>> want;
    for (int i = 0; i < 6; ++i) {
      prompts.push_back(random_ids(110 + g() % 15, V, g));  // every one crosses into a second page
      dsv4::RequestParams p = greedy(30);
      if (i % 2) {
        p.sampling.temperature = 0.8f;
        p.sampling.top_k = 20;
        p.sampling.seed = 100 + static_cast<uint64_t>(i);
      }
      params.push_back(p);
      want.push_back(solo(*m, prompts.back(), p));
    }
    SchedulerOptions so;
    so.preemption = mode;
    so.max_num_batched_tokens = 256;
    Scheduler sched(m->backend(), nullptr, so);
    std::vector<dsv4::RequestId> ids;
    int64_t max_running = 0;
    for (int i = 0; i < 6; ++i) {
      Request r;
      r.prompt = prompts[static_cast<size_t>(i)];
      r.params = params[static_cast<size_t>(i)];
      r.on_event = [&](const dsv4::RequestEvent&) { max_running = std::max(max_running, sched.stats().running); };
      ids.push_back(sched.submit(std::move(r)));
    }
    sched.run_until_idle();
    INFO((mode == dsv4::Preemption::recompute ? "recompute" : "reserve"));
    for (int i = 0; i < 6; ++i) {
      const auto o = sched.take(ids[static_cast<size_t>(i)]);
      REQUIRE(o);
      CHECK(o->samples[0].tokens == want[static_cast<size_t>(i)]);
      CHECK(o->samples[0].reason == StopReason::max_tokens);
    }
    const auto st = sched.stats();
    if (mode == dsv4::Preemption::recompute) {
      CHECK(st.preemptions > 0);
      CHECK(max_running == 3);
    } else {
      CHECK(st.preemptions == 0);
      CHECK(max_running <= 2);  // prompt + 30 tokens needs two pages each: two fit
    }
    CHECK(st.state_used == 0);
    // A request bigger than the whole budget is refused at submit.
    Request big;
    big.prompt = random_ids(1000, V, g);
    big.params = greedy(4);
    big.params.n = 4;  // four sequences' fixed state alone exceed it
    try {
      sched.submit(std::move(big));
      FAIL("expected out_of_memory");
    } catch (const dsv4::Error& e) {
      CHECK(e.status() == dsv4::Status::out_of_memory);
    }
  }
}

TEST_CASE("n samples share the prompt's prefill and equal their solo runs", "[scheduler]") {
  auto m = dsv4_test::load_small();
  std::mt19937 g(23);
  const auto prompt = random_ids(37, m->config().vocab_size, g);
  dsv4::RequestParams p;
  p.sampling.temperature = 1.0f;
  p.sampling.seed = 5;
  p.stop.max_tokens = 8;
  p.stop.stop_on_eos = false;
  p.n = 3;
  Scheduler sched(m->backend(), nullptr);
  Request r;
  r.prompt = prompt;
  r.params = p;
  const auto id = sched.submit(std::move(r));
  const auto o = sched.wait(id);  // no loop thread: wait() drives the steps
  REQUIRE(o.samples.size() == 3);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    CHECK(o.samples[static_cast<size_t>(i)].tokens == solo(*m, prompt, p, i));
    distinct.insert(o.samples[static_cast<size_t>(i)].tokens);
  }
  CHECK(distinct.size() > 1);
  // The shared prefill ran once: prompt − 1 tokens + the last token per sample.
  CHECK(sched.stats().prompt_tokens == static_cast<int64_t>(prompt.size() - 1 + 3));
  CHECK(sched.stats().state_used == 0);
}

TEST_CASE("refusals name their reason", "[scheduler]") {
  auto m = dsv4_test::load_small();
  SchedulerOptions so;
  so.max_model_len = 64;
  so.max_waiting = 2;
  Scheduler sched(m->backend(), nullptr, so);
  auto expect = [&](Request r, dsv4::Status st, const char* word) {
    try {
      sched.submit(std::move(r));
      FAIL("expected an error");
    } catch (const dsv4::Error& e) {
      CHECK(e.status() == st);
      CHECK(std::string(e.what()).find(word) != std::string::npos);
    }
  };
  Request r;
  r.params = greedy(4);
  expect(r, dsv4::Status::invalid_argument, "empty");
  r.prompt = std::vector<int32_t>(64, 3);
  expect(r, dsv4::Status::context_overflow, "max_model_len");
  r.prompt = {1, 2, 5000};
  expect(r, dsv4::Status::invalid_argument, "5000");
  r.prompt = {1, 2};
  r.params.n = 0;
  expect(r, dsv4::Status::invalid_argument, "n");
  r.params.n = 1;
  r.params.sampling.top_p = 0.0f;
  expect(r, dsv4::Status::invalid_argument, "top_p");
  r.params.sampling.top_p = 1.0f;
  r.params.stop.max_tokens = -1;
  expect(r, dsv4::Status::invalid_argument, "max_tokens");
  r.params.stop.max_tokens = 4;
  r.params.stop.stop_strings = {"x"};
  expect(r, dsv4::Status::invalid_argument, "tokenizer");
  r.params.stop.stop_strings.clear();
  (void)sched.submit(r);
  (void)sched.submit(r);
  expect(r, dsv4::Status::busy, "queue");
  sched.run_until_idle();
  CHECK(sched.stats().finished_requests == 2);
  REQUIRE_THROWS_AS(Scheduler(m->backend(), nullptr, SchedulerOptions{0}), dsv4::Error);
}

TEST_CASE("streamed pieces add up to the text and stop strings are held back and excluded", "[scheduler]") {
  dsv4::LoadOptions o;
  auto m = dsv4_test::load_small(o, /*with_tokenizer=*/true);
  REQUIRE(m->tokenizer());
  const auto prompt = m->tokenizer()->encode("Once upon a time");
  dsv4::RequestParams p = greedy(12);
  const auto free_run = solo(*m, prompt, p);
  const std::string text = m->tokenizer()->decode(free_run);
  Scheduler sched(m->backend(), m->tokenizer());
  std::string streamed;
  Request r;
  r.prompt = prompt;
  r.params = p;
  r.on_event = [&](const dsv4::RequestEvent& e) { streamed += e.piece; };
  auto out = sched.wait(sched.submit(r));
  CHECK(out.samples[0].tokens == free_run);
  CHECK(out.samples[0].text == text);
  CHECK(streamed == text);
  // A stop string from the middle of that text: output ends before it and no piece shows it.
  if (text.size() > 6) {
    const std::string stop = text.substr(text.size() / 2, 3);
    const size_t at = text.find(stop);
    p.stop.stop_strings = {stop};
    r.params = p;
    streamed.clear();
    out = sched.wait(sched.submit(r));
    CHECK(out.samples[0].reason == StopReason::stop_string);
    CHECK(out.samples[0].text == text.substr(0, at));
    CHECK(streamed == text.substr(0, at));
    CHECK(out.samples[0].tokens == solo(*m, prompt, p));
  }
}

TEST_CASE("a fault inside a step fails only its request", "[scheduler]") {
  auto m = dsv4_test::load_small();
  auto& be = dynamic_cast<dsv4::cpu::CpuBackend&>(m->backend());
  std::mt19937 g(24);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 3; ++i) prompts.push_back(random_ids(10 + 3 * static_cast<size_t>(i), m->config().vocab_size, g));
  Scheduler sched(be, nullptr);
  std::vector<dsv4::RequestId> ids;
  for (auto& pr : prompts) {
    Request r;
    r.prompt = pr;
    r.params = greedy(5);
    ids.push_back(sched.submit(std::move(r)));
  }
  dsv4::cpu::FaultInjector::arm(be, 2, 1);  // the second chunk of the first step
  sched.run_until_idle();
  int failed = 0;
  for (size_t i = 0; i < 3; ++i) {
    const auto o = sched.take(ids[i]);
    REQUIRE(o);
    if (o->samples[0].reason == StopReason::error) {
      ++failed;
      CHECK(o->samples[0].error.find("injected") != std::string::npos);
    } else {
      CHECK(o->samples[0].tokens == solo(*m, prompts[i], greedy(5)));
    }
  }
  CHECK(failed == 1);
  CHECK(sched.stats().failed_requests == 1);
  CHECK(be.memory().used == 0);
}

TEST_CASE("256 requests on the null backend: continuous batching at scale", "[scheduler]") {
  dsv4::LoadOptions o;
  o.backend = "null";
  auto m = dsv4_test::load_small(o);
  const int V = m->config().vocab_size;
  SchedulerOptions so;
  so.max_num_seqs = 64;
  so.max_num_batched_tokens = 512;
  Scheduler sched(m->backend(), nullptr, so);
  std::mt19937 g(25);
  std::vector<std::pair<dsv4::RequestId, std::vector<int32_t>>> reqs;
  for (int i = 0; i < 256; ++i) {
    Request r;
    r.prompt = random_ids(1 + g() % 300, V, g);
    r.params = greedy(1 + static_cast<int>(g() % 20));
    // The null backend's ids are a hash of (last token, position).
    std::vector<int32_t> want;
    int32_t last = r.prompt.back();
    for (int k = 0; k < r.params.stop.max_tokens; ++k) {
      last = dsv4::null_backend_sample(last, static_cast<int64_t>(r.prompt.size()) + k - 1, V);
      want.push_back(last);
    }
    const auto id = sched.submit(std::move(r));
    reqs.emplace_back(id, want);
  }
  sched.run_until_idle();
  for (auto& [id, want] : reqs) CHECK(sched.take(id)->samples[0].tokens == want);
  const auto st = sched.stats();
  CHECK(st.state_used == 0);
  CHECK(st.steps < 256 * 10);  // batched, not one request at a time
}
