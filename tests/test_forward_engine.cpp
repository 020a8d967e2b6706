// Engine behaviour on a fixture model: input validation (bad ids, context overflow, state left as
// before), independent sessions interleaved = separate runs, fork, reset, the MTP layer's shape
// and determinism, and generate()'s stop conditions. Skips when ../shared is absent.
#include <filesystem>
#include <memory>

#include "catch.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/generate.hpp"

namespace {
namespace fs = std::filesystem;
std::unique_ptr<dsv4::Model> tiny_a() {
  const fs::path d = fs::path(dsv4_test::shared_dir()) / "fixtures" / "tiny-a" / "model";
  if (!fs::exists(d / "config.json")) return nullptr;
  dsv4::LoadOptions o;
  o.load_tokenizer = false;
  return dsv4::Model::load(d.string(), o, dsv4::Logger(dsv4::LogLevel::warn));
}
std::vector<int32_t> seq(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> v;
  uint32_t x = seed;
  for (int i = 0; i < n; ++i) v.push_back(static_cast<int32_t>((x = x * 1664525u + 1013904223u) >> 8) % vocab);
  return v;
}
dsv4::ForwardChunk chunk(dsv4::SeqHandle h, std::span<const int32_t> t, dsv4::LogitsMode mode, std::vector<float>* out) {
  dsv4::ForwardChunk c;
  c.seq = h;
  c.tokens = t;
  c.logits = mode;
  c.logits_out = out;
  return c;
}
#define NEED_MODEL(m)                                          \
  auto m = tiny_a();                                           \
  if (!m) {                                                    \
    WARN("../shared/fixtures/tiny-a not found: test skipped"); \
    return;                                                    \
  }
}  // namespace

TEST_CASE("invalid token ids and context overflow leave the session unchanged", "[engine]") {
  NEED_MODEL(m);
  auto s = m->create_session(40);
  const auto ids = seq(30, 1024, 1);
  s->append(ids);
  const std::vector<float> before(s->logits().begin(), s->logits().end());
  std::vector<int32_t> bad = {5, 1024, 7};
  try {
    s->append(bad);
    FAIL("expected an error");
  } catch (const dsv4::Error& e) {
    CHECK(e.status() == dsv4::Status::invalid_argument);
    CHECK(std::string(e.what()).find("1024") != std::string::npos);
    CHECK(std::string(e.what()).find("position 31") != std::string::npos);
  }
  bad = {-1};
  REQUIRE_THROWS_AS(s->append(bad), dsv4::Error);
  try {
    s->append(seq(11, 1024, 2));
    FAIL("expected context_overflow");
  } catch (const dsv4::Error& e) {
    CHECK(e.status() == dsv4::Status::context_overflow);
  }
  CHECK(s->position() == 30);
  CHECK(m->backend().sequence_position(s->handle()) == 30);
  // A backend batch is validated as a whole: a bad second chunk leaves the first sequence as it was.
  const std::vector<int32_t> more = seq(3, 1024, 3), bad_ids = {1, 99999};
  dsv4::ForwardChunk batch[2];
  batch[0].seq = s->handle();
  batch[0].tokens = more;
  batch[1].seq = 999999;  // unknown handle
  batch[1].tokens = more;
  REQUIRE_THROWS_AS(m->backend().forward(batch), dsv4::Error);
  batch[1].seq = s->handle();  // the same sequence twice
  REQUIRE_THROWS_AS(m->backend().forward(batch), dsv4::Error);
  batch[1].tokens = bad_ids;
  auto other = m->create_session(40);
  batch[1].seq = other->handle();  // a token id past the vocabulary, straight to the backend
  REQUIRE_THROWS_AS(m->backend().forward(batch), dsv4::Error);
  CHECK(m->backend().sequence_position(s->handle()) == 30);
  CHECK(m->backend().sequence_position(other->handle()) == 0);
  // The next token continues exactly as if the failed calls never happened.
  auto t = m->create_session();
  t->append(ids);
  const std::vector<int32_t> next = {9};
  s->append(next);
  t->append(next);
  CHECK(std::vector<float>(s->logits().begin(), s->logits().end()) ==
        std::vector<float>(t->logits().begin(), t->logits().end()));
}

TEST_CASE("interleaved sessions, a batched forward, fork and reset are independent", "[engine]") {
  NEED_MODEL(m);
  const auto a = seq(45, 1024, 3), b = seq(33, 1024, 4);
  auto ref_a = m->create_session(), ref_b = m->create_session();
  ref_a->append(a, dsv4::LogitsMode::all);
  ref_b->append(b, dsv4::LogitsMode::all);
  const std::vector<float> la(ref_a->logits().begin(), ref_a->logits().end());
  const std::vector<float> lb(ref_b->logits().begin(), ref_b->logits().end());
  // One backend batch holding both sequences in chunks.
  auto& be = m->backend();
  const auto ha = be.create_sequence(100), hb = be.create_sequence(100);
  std::vector<float> oa, ob, all_a, all_b;
  for (size_t pa = 0, pb = 0; pa < a.size() || pb < b.size();) {
    std::vector<dsv4::ForwardChunk> batch;
    const size_t na = std::min<size_t>(a.size() - pa, 6), nb = std::min<size_t>(b.size() - pb, 5);
    if (na) batch.push_back(chunk(ha, std::span<const int32_t>(a).subspan(pa, na), dsv4::LogitsMode::all, &oa));
    if (nb) batch.push_back(chunk(hb, std::span<const int32_t>(b).subspan(pb, nb), dsv4::LogitsMode::all, &ob));
    be.forward(batch);
    if (na) all_a.insert(all_a.end(), oa.begin(), oa.end());
    if (nb) all_b.insert(all_b.end(), ob.begin(), ob.end());
    pa += na;
    pb += nb;
  }
  CHECK(all_a == la);
  CHECK(all_b == lb);
  be.release_sequence(ha);
  be.release_sequence(hb);
  // Fork continues identically; reset starts over.
  auto s = m->create_session();
  s->append(std::span<const int32_t>(a).first(20));
  auto f = s->fork();
  s->append(std::span<const int32_t>(a).subspan(20), dsv4::LogitsMode::all);
  f->append(std::span<const int32_t>(a).subspan(20), dsv4::LogitsMode::all);
  CHECK(std::vector<float>(s->logits().begin(), s->logits().end()) ==
        std::vector<float>(f->logits().begin(), f->logits().end()));
  f->reset();
  f->append(a, dsv4::LogitsMode::last);
  CHECK(std::vector<float>(f->logits().begin(), f->logits().end()) ==
        std::vector<float>(la.end() - 1024, la.end()));
}

TEST_CASE("MTP layer: shape and determinism", "[engine][mtp]") {
  NEED_MODEL(m);
  auto& be = m->backend();
  const auto& cfg = m->config();
  const auto ids = seq(20, cfg.vocab_size, 5);
  auto run = [&] {
    const auto h = be.create_sequence(64);
    std::vector<float> logits, streams, mtp;
    dsv4::ForwardChunk c = chunk(h, std::span<const int32_t>(ids).first(19), dsv4::LogitsMode::all, &logits);
    c.final_streams_out = &streams;
    be.forward({&c, 1});
    REQUIRE(streams.size() == static_cast<size_t>(19 * cfg.hc_mult * cfg.hidden_size));
    // Row i: final state of position i and token i+1 → logits for token i+2; in two calls.
    const size_t row = static_cast<size_t>(cfg.hc_mult * cfg.hidden_size);
    be.forward_mtp(h, std::span<const float>(streams).first(12 * row), std::span<const int32_t>(ids).subspan(1, 12), mtp);
    std::vector<float> out = mtp, tail;
    be.forward_mtp(h, std::span<const float>(streams).subspan(12 * row), std::span<const int32_t>(ids).subspan(13, 7), tail);
    out.insert(out.end(), tail.begin(), tail.end());
    be.release_sequence(h);
    return out;
  };
  const auto a = run(), b = run();
  REQUIRE(a.size() == static_cast<size_t>(19 * cfg.vocab_size));
  CHECK(a == b);
  for (float x : a) REQUIRE(std::isfinite(x));
}

TEST_CASE("generate stops on EOS, max tokens and context", "[engine][generate]") {
  NEED_MODEL(m);
  const auto prompt = seq(10, 1024, 6);
  dsv4::GenerateParams gp;
  gp.sampler.temperature = 0.0f;
  gp.max_new_tokens = 6;
  gp.stop_on_eos = false;
  auto s = m->create_session();
  const auto r = dsv4::generate(*s, nullptr, prompt, gp);
  REQUIRE(r.tokens.size() == 6);
  CHECK(r.reason == dsv4::StopReason::max_tokens);
  // The session holds the prompt and every generated token, the last one included.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r.tokens.begin(), r.tokens.end());
  CHECK(s->tokens() == all);
  CHECK(s->position() == 16);
  // Declaring the third greedy token the EOS id stops right there (EOS included).
  gp.stop_on_eos = true;
  gp.eos_id = r.tokens[2];
  auto s2 = m->create_session();
  const auto r2 = dsv4::generate(*s2, nullptr, prompt, gp);
  CHECK(r2.reason == dsv4::StopReason::eos);
  CHECK(r2.tokens == std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + 3));
  // A context of 13 tokens leaves room for 3 generated tokens (prompt + output ≤ context), all of
  // them in the session; a prompt that fills the context generates nothing.
  gp.stop_on_eos = false;
  auto s3 = m->create_session(13);
  const auto r3 = dsv4::generate(*s3, nullptr, prompt, gp);
  CHECK(r3.reason == dsv4::StopReason::context_full);
  CHECK(r3.tokens == std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + 3));
  CHECK(s3->position() == 13);
  auto s5 = m->create_session(10);
  const auto r5 = dsv4::generate(*s5, nullptr, prompt, gp);
  CHECK(r5.reason == dsv4::StopReason::context_full);
  CHECK(r5.tokens.empty());
  // Callback cancel.
  auto s4 = m->create_session();
  int calls = 0;
  const auto r4 = dsv4::generate(*s4, nullptr, prompt, gp, [&](int32_t, std::string_view) { return ++calls < 2; });
  CHECK(r4.reason == dsv4::StopReason::cancelled);
  CHECK(r4.tokens.size() == 2);
  CHECK(s4->position() == 12);
  // Stop token ids end the generation with the token kept.
  gp.stop_token_ids = {r.tokens[1]};
  auto s6 = m->create_session();
  const auto r6 = dsv4::generate(*s6, nullptr, prompt, gp);
  CHECK(r6.reason == dsv4::StopReason::stop_token);
  CHECK(r6.tokens == std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + 2));
}
