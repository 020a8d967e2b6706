// The backend contract (include/dsv4/backend.hpp) on the CPU backend and a generated small model:
// mixed prefill/decode steps are bit-identical to each sequence alone, in-backend sampling and
// from_last_sample, truncate and snapshot/restore against recomputation, failure atomicity with an
// injected fault, the state pool (admission, page growth, release to zero), submit/wait limits.
// The same contract checks run on the null backend where they do not need a model.
#include <algorithm>
#include <cmath>
#include <random>

#include "catch.hpp"
#include "cpu/fault_injection.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/error.hpp"
#include "small_model.hpp"

namespace {
using dsv4::ChunkStatus;
using dsv4::ForwardChunk;
using dsv4::LogitsMode;

std::vector<int32_t> random_ids(size_t n, int vocab, std::mt19937& g) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

ForwardChunk chunk(dsv4::SeqHandle h, std::span<const int32_t> t, LogitsMode mode, std::vector<float>* out) {
  ForwardChunk c;
  c.seq = h;
  c.tokens = t;
  c.logits = mode;
  c.logits_out = out;
  return c;
}

// Every logits row of `ids` fed in one chunk to a fresh sequence.
std::vector<float> alone(dsv4::Backend& be, std::span<const int32_t> ids) {
  const auto h = be.create_sequence(4096);
  std::vector<float> out;
  auto c = chunk(h, ids, LogitsMode::all, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  be.release_sequence(h);
  return out;
}

std::vector<float> rows(const std::vector<float>& all, size_t from, size_t n, int vocab) {
  return std::vector<float>(all.begin() + static_cast<long>(from * vocab), all.begin() + static_cast<long>((from + n) * vocab));
}
}  // namespace

TEST_CASE("mixed prefill/decode steps give each sequence exactly its solo logits", "[backend]") {
  auto m = dsv4_test::load_small();
  auto& be = m->backend();
  const int V = m->config().vocab_size;
  std::mt19937 g(11);
  constexpr int kSeqs = 5;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> ref;
  for (int i = 0; i < kSeqs; ++i) {
    ids.push_back(random_ids(20 + 13 * i, V, g));
    ref.push_back(alone(be, ids.back()));
  }
  std::vector<dsv4::SeqHandle> h;
  std::vector<size_t> pos(kSeqs, 0);
  for (int i = 0; i < kSeqs; ++i) h.push_back(be.create_sequence(4096));
  std::vector<std::vector<float>> out(kSeqs);
  int steps = 0;
  while (true) {
    std::vector<ForwardChunk> step;
    std::vector<int> who;
    for (int i = 0; i < kSeqs; ++i) {
      if (pos[i] == ids[i].size() || g() % 4 == 0) continue;  // some sequences sit a step out
      // Prefill chunks of any size (crossing window and compressor boundaries) or single decodes.
      const size_t n = std::min(ids[i].size() - pos[i], g() % 2 ? size_t{1} : size_t{1 + g() % 17});
      step.push_back(chunk(h[i], std::span<const int32_t>(ids[i]).subspan(pos[i], n), LogitsMode::all, &out[i]));
      who.push_back(i);
    }
    bool done = true;
    for (int i = 0; i < kSeqs; ++i) done = done && pos[i] == ids[i].size();
    if (done) break;
    if (step.empty()) continue;
    REQUIRE(be.forward(step).ok());
    ++steps;
    for (size_t k = 0; k < who.size(); ++k) {
      const int i = who[k];
      const size_t n = step[k].tokens.size();
      INFO("sequence " << i << " positions " << pos[i] << ".." << pos[i] + n);
      REQUIRE(out[i] == rows(ref[i], pos[i], n, V));  // bit-identical
      pos[i] += n;
    }
  }
  CHECK(steps > 10);
  for (int i = 0; i < kSeqs; ++i) {
    CHECK(be.sequence_tokens(h[i]) == ids[i]);
    be.release_sequence(h[i]);
  }
  CHECK(be.memory().used == 0);
}

TEST_CASE("sampling inside the step, and decoding from the last sample", "[backend]") {
  auto m = dsv4_test::load_small();
  auto& be = m->backend();
  const int V = m->config().vocab_size;
  std::mt19937 g(12);
  const auto prompt = random_ids(9, V, g);
  dsv4::SamplerParams greedy;
  greedy.temperature = 0.0f;
  greedy.logprobs = 3;
  dsv4::Sampler s(greedy);
  dsv4::SamplerState st;
  const auto h = be.create_sequence(64);
  ForwardChunk c = chunk(h, prompt, LogitsMode::last, nullptr);
  std::vector<float> logits;
  c.logits_out = &logits;
  c.sampler = &s;
  c.sampler_state = &st;
  auto r = be.forward({&c, 1});
  REQUIRE(r.ok());
  const int32_t first = r.chunks[0].sample.id;
  CHECK(first == std::max_element(logits.begin(), logits.end()) - logits.begin());
  CHECK(r.chunks[0].sample.top.size() == 3);
  CHECK(r.chunks[0].sample.top[0].id == first);
  CHECK(st.generated.count(first) == 1);
  // Next step: the token comes from the backend's own last sample.
  ForwardChunk d;
  d.seq = h;
  d.from_last_sample = true;
  d.logits = LogitsMode::last;
  d.logits_out = &logits;
  d.sampler = &s;
  d.sampler_state = &st;
  r = be.forward({&d, 1});
  REQUIRE(r.ok());
  std::vector<int32_t> fed = prompt;
  fed.push_back(first);
  CHECK(be.sequence_tokens(h) == fed);
  CHECK(rows(alone(be, fed), fed.size() - 1, 1, V) == logits);
  // from_last_sample with tokens, or without any sample, is a validation error (nothing changes).
  const auto h2 = be.create_sequence(64);
  d.seq = h2;
  REQUIRE_THROWS_AS(be.forward({&d, 1}), dsv4::Error);
  CHECK(be.sequence_position(h2) == 0);
  be.release_sequence(h);
  be.release_sequence(h2);
}

TEST_CASE("truncate within the rollback bound equals recomputation", "[backend]") {
  dsv4::LoadOptions o;
  o.rollback_tokens = 16;
  auto m = dsv4_test::load_small(o);
  auto& be = m->backend();
  const int V = m->config().vocab_size;
  std::mt19937 g(13);
  // Positions chosen around CSA (4) and HCA (16) window closes and the 16-token sliding window.
  for (const auto& [len, back] : std::vector<std::pair<int, int>>{{40, 1}, {47, 5}, {48, 16}, {33, 3}, {64, 9}, {17, 16}}) {
    const auto ids = random_ids(static_cast<size_t>(len), V, g);
    const auto alt = random_ids(12, V, g);
    const auto h = be.create_sequence(4096);
    std::vector<float> out;
    auto c = chunk(h, ids, LogitsMode::none, &out);
    REQUIRE(be.forward({&c, 1}).ok());
    be.truncate_sequence(h, len - back);
    CHECK(be.sequence_position(h) == len - back);
    c = chunk(h, alt, LogitsMode::all, &out);
    REQUIRE(be.forward({&c, 1}).ok());
    std::vector<int32_t> expect(ids.begin(), ids.end() - back);
    expect.insert(expect.end(), alt.begin(), alt.end());
    INFO("length " << len << " back " << back);
    CHECK(out == rows(alone(be, expect), expect.size() - alt.size(), alt.size(), V));
    CHECK(be.sequence_tokens(h) == expect);
    // One token at a time back and forth (speculative decoding's reject path).
    be.truncate_sequence(h, static_cast<int64_t>(expect.size()) - 1);
    c = chunk(h, std::span<const int32_t>(expect).last(1), LogitsMode::last, &out);
    REQUIRE(be.forward({&c, 1}).ok());
    CHECK(out == rows(alone(be, expect), expect.size() - 1, 1, V));
    // Beyond the bound: a clear error, nothing changed; to 0 always works.
    if (expect.size() > 17) {
      try {
        be.truncate_sequence(h, static_cast<int64_t>(expect.size()) - 17);
        FAIL("expected an error");
      } catch (const dsv4::Error& e) {
        CHECK(std::string(e.what()).find("rollback") != std::string::npos);
      }
    }
    CHECK(be.sequence_position(h) == static_cast<int64_t>(expect.size()));
    be.truncate_sequence(h, 0);
    c = chunk(h, alt, LogitsMode::all, &out);
    REQUIRE(be.forward({&c, 1}).ok());
    CHECK(out == alone(be, alt));
    be.release_sequence(h);
  }
  CHECK(be.memory().used == 0);
}

TEST_CASE("snapshot at a page boundary and restore reproduce recomputation", "[backend]") {
  auto m = dsv4_test::load_small();
  auto& be = m->backend();
  const int V = m->config().vocab_size;
  const int page = be.memory().cost.page_tokens;
  REQUIRE(page == 128);
  std::mt19937 g(14);
  const auto prefix = random_ids(static_cast<size_t>(2 * page), V, g);
  const auto a = random_ids(7, V, g), b = random_ids(9, V, g);
  const auto h = be.create_sequence(4096);
  std::vector<float> out;
  auto c = chunk(h, std::span<const int32_t>(prefix).first(static_cast<size_t>(page) + 3), LogitsMode::none, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  REQUIRE_THROWS_AS(be.snapshot_sequence(h), dsv4::Error);  // not a page boundary
  c = chunk(h, std::span<const int32_t>(prefix).subspan(static_cast<size_t>(page) + 3), LogitsMode::none, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  const size_t used_before = be.memory().used;
  const auto snap = be.snapshot_sequence(h);
  CHECK(be.memory().used == used_before + be.memory().cost.bytes_for(2 * page));
  CHECK(be.memory().snapshots == 1);
  // The original goes on with `a`; a restored copy with `b`, another with `a`.
  c = chunk(h, a, LogitsMode::all, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  const auto r1 = be.restore_snapshot(snap), r2 = be.restore_snapshot(snap);
  std::vector<float> o1, o2;
  ForwardChunk two[2] = {chunk(r1, b, LogitsMode::all, &o1), chunk(r2, a, LogitsMode::all, &o2)};
  REQUIRE(be.forward(two).ok());
  CHECK(o2 == out);
  std::vector<int32_t> pb = prefix;
  pb.insert(pb.end(), b.begin(), b.end());
  CHECK(o1 == rows(alone(be, pb), prefix.size(), b.size(), V));
  be.release_snapshot(snap);
  for (auto x : {h, r1, r2}) be.release_sequence(x);
  CHECK(be.memory().used == 0);
  CHECK(be.memory().snapshots == 0);
}

TEST_CASE("a failure injected mid-step leaves no sequence half-advanced", "[backend]") {
  dsv4::LoadOptions o;
  o.rollback_tokens = 8;
  auto m = dsv4_test::load_small(o);
  auto& be = dynamic_cast<dsv4::cpu::CpuBackend&>(m->backend());
  const int V = m->config().vocab_size;
  std::mt19937 g(15);
  // Three sequences with history; the step gives one a decode, one a short and one a long chunk
  // (longer than the rollback slots: restored from the ring copy).
  std::vector<std::vector<int32_t>> hist, next;
  for (int i = 0; i < 3; ++i) {
    hist.push_back(random_ids(30 + 5 * static_cast<size_t>(i), V, g));
    next.push_back(random_ids(i == 0 ? 1 : i == 1 ? 6 : 37, V, g));
  }
  for (int victim = 0; victim < 3; ++victim)
    for (int layer : {0, 3, 5}) {
      INFO("fault in chunk " << victim << " at layer " << layer);
      std::vector<dsv4::SeqHandle> h;
      for (int i = 0; i < 3; ++i) {
        h.push_back(be.create_sequence(4096));
        auto c = chunk(h[i], hist[i], LogitsMode::none, nullptr);
        REQUIRE(be.forward({&c, 1}).ok());
      }
      const size_t used = be.memory().used;
      dsv4::cpu::FaultInjector::arm(be, layer, victim);
      std::vector<std::vector<float>> out(3);
      std::vector<ForwardChunk> step;
      for (int i = 0; i < 3; ++i) step.push_back(chunk(h[i], next[i], LogitsMode::all, &out[i]));
      const auto r = be.forward(step);
      size_t grown = 0;
      for (int i = 0; i < 3; ++i) {
        std::vector<int32_t> expect = hist[i];
        if (i == victim) {
          CHECK(r.chunks[i].status == ChunkStatus::rolled_back);
          CHECK(r.chunks[i].error.find("injected") != std::string::npos);
          CHECK(be.sequence_position(h[i]) == static_cast<int64_t>(hist[i].size()));
          CHECK(be.sequence_tokens(h[i]) == hist[i]);
          continue;
        }
        REQUIRE(r.chunks[i].status == ChunkStatus::ok);
        expect.insert(expect.end(), next[i].begin(), next[i].end());
        CHECK(out[i] == rows(alone(be, expect), hist[i].size(), next[i].size(), V));
        grown += be.memory().cost.bytes_for(static_cast<int64_t>(expect.size())) -
                 be.memory().cost.bytes_for(static_cast<int64_t>(hist[i].size()));
      }
      CHECK(be.memory().used == used + grown);  // the victim's pages went back to the pool
      // The rolled-back sequence continues exactly as if the failed step never happened.
      std::vector<float> again;
      auto c = chunk(h[victim], next[victim], LogitsMode::all, &again);
      REQUIRE(be.forward({&c, 1}).ok());
      std::vector<int32_t> expect = hist[victim];
      expect.insert(expect.end(), next[victim].begin(), next[victim].end());
      CHECK(again == rows(alone(be, expect), hist[victim].size(), next[victim].size(), V));
      for (auto x : h) be.release_sequence(x);
    }
  CHECK(be.memory().used == 0);
}

TEST_CASE("the state pool admits, grows by pages and frees to zero", "[backend]") {
  auto probe = dsv4_test::load_small();
  const dsv4::StateCost cost = probe->backend().memory().cost;
  CHECK(cost.fixed.fp8 > 0);
  CHECK(cost.fixed.bf16 > 0);
  CHECK(cost.fixed.f32 > 0);
  CHECK(cost.page.fp4 > 0);  // indexer keys
  CHECK(cost.page.e8m0 > 0);
  // Budget: two sequences of 200 tokens.
  dsv4::LoadOptions o;
  o.max_sequences = 2;
  o.max_context = 200;
  auto m = dsv4_test::load_small(o);
  auto& be = m->backend();
  const auto mem = be.memory();
  REQUIRE(mem.budget == 2 * cost.bytes_for(200));
  const auto a = be.create_sequence(4096), b = be.create_sequence(4096);
  CHECK(be.memory().used == 2 * cost.bytes_for(0));
  std::mt19937 g(16);
  const auto ids = random_ids(300, m->config().vocab_size, g);
  std::vector<float> out;
  auto c = chunk(a, std::span<const int32_t>(ids).first(200), LogitsMode::none, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  CHECK(be.memory().used == cost.bytes_for(200) + cost.bytes_for(0));
  // b may grow to 2 pages (256 tokens) only if the pool has that room: 200 tokens take 2 pages
  // already, so a third sequence's page does not fit.
  c = chunk(b, std::span<const int32_t>(ids).first(200), LogitsMode::none, &out);
  REQUIRE(be.forward({&c, 1}).ok());
  CHECK(be.memory().free < cost.page.total() + cost.fixed.total());
  try {
    (void)be.create_sequence(4096);
    FAIL("expected out_of_memory");
  } catch (const dsv4::Error& e) {
    CHECK(e.status() == dsv4::Status::out_of_memory);
  }
  c = chunk(b, std::span<const int32_t>(ids).subspan(200, 57), LogitsMode::none, &out);
  {  // the step starting page 3 is refused, nothing changes
    try {
      be.forward({&c, 1});
      FAIL("expected out_of_memory");
    } catch (const dsv4::Error& e) {
      CHECK(e.status() == dsv4::Status::out_of_memory);
    }
    CHECK(be.sequence_position(b) == 200);
  }
  be.reset_sequence(a);
  CHECK(be.memory().used == cost.bytes_for(200) + cost.bytes_for(0));
  be.release_sequence(a);
  be.release_sequence(b);
  CHECK(be.memory().used == 0);
}

TEST_CASE("steps in flight are bounded and waited for once", "[backend]") {
  auto m = dsv4_test::load_small();
  auto& be = m->backend();
  const auto h1 = be.create_sequence(64), h2 = be.create_sequence(64), h3 = be.create_sequence(64);
  const std::vector<int32_t> t = {1, 2, 3};
  auto c1 = chunk(h1, t, LogitsMode::none, nullptr), c2 = chunk(h2, t, LogitsMode::none, nullptr),
       c3 = chunk(h3, t, LogitsMode::none, nullptr);
  const auto s1 = be.submit({&c1, 1});
  const auto s2 = be.submit({&c2, 1});
  REQUIRE_THROWS_AS(be.submit({&c3, 1}), dsv4::Error);
  CHECK(be.wait(s2).ok());
  CHECK(be.wait(s1).ok());
  REQUIRE_THROWS_AS(be.wait(s1), dsv4::Error);
  CHECK(be.sequence_position(h3) == 0);
  for (auto h : {h1, h2, h3}) be.release_sequence(h);
}

TEST_CASE("backend settings are checked by the backend and the registry names what exists", "[backend]") {
  dsv4::LoadOptions o;
  o.backend_params = {{"threads", "2"}, {"bogus", "1"}};
  try {
    (void)dsv4_test::load_small(o);
    FAIL("expected an error");
  } catch (const dsv4::Error& e) {
    CHECK(std::string(e.what()).find("bogus") != std::string::npos);
    CHECK(std::string(e.what()).find("threads") != std::string::npos);
  }
  o.backend_params = {{"threads", "100000"}};
  REQUIRE_THROWS_AS(dsv4_test::load_small(o), dsv4::Error);
  o.backend_params = {{"indexer_ties", "random"}};
  REQUIRE_THROWS_AS(dsv4_test::load_small(o), dsv4::Error);
  o.backend_params = {};
  o.backend = "tpu";
  try {
    (void)dsv4_test::load_small(o);
    FAIL("expected an error");
  } catch (const dsv4::Error& e) {
    CHECK(e.status() == dsv4::Status::unsupported);
    CHECK(std::string(e.what()).find("cpu") != std::string::npos);
  }
  bool has_cpu = false, has_null = false;
  for (const auto& e : dsv4::registered_backends()) {
    has_cpu = has_cpu || std::string(e.name) == "cpu";
    has_null = has_null || std::string(e.name) == "null";
  }
  CHECK((has_cpu && has_null));
}
