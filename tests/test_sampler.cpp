// Sampler: seeded reproducibility, greedy ties, the support restrictions of top-k / top-p / min-p,
// penalties, parameter validation. Distributions come from a seeded generator, never constants.
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "catch.hpp"
#include "dsv4/error.hpp"
#include "dsv4/sampler.hpp"

namespace {
std::vector<float> random_logits(int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}
std::vector<int32_t> draws(const dsv4::SamplerParams& p, const std::vector<float>& logits, int n,
                           const std::vector<int32_t>& history = {}) {
  dsv4::Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits, history));
  return out;
}
// Indices sorted by logit descending (ties by id).
std::vector<int32_t> ranked(const std::vector<float>& l) {
  std::vector<int32_t> idx(l.size());
  for (size_t i = 0; i < l.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
  return idx;
}
}  // namespace

TEST_CASE("same seed, same draws; another seed, other draws", "[sampler]") {
  const auto l = random_logits(301, 7);
  dsv4::SamplerParams p;
  p.temperature = 1.3f;
  p.seed = 42;
  const auto a = draws(p, l, 200), b = draws(p, l, 200);
  CHECK(a == b);
  p.seed = 43;
  CHECK(draws(p, l, 200) != a);
  CHECK(std::set<int32_t>(a.begin(), a.end()).size() > 5);  // really sampling
}

TEST_CASE("greedy picks the maximum, lowest id on ties", "[sampler]") {
  auto l = random_logits(97, 3);
  const int32_t best = ranked(l)[0];
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  CHECK(draws(p, l, 3) == std::vector<int32_t>{best, best, best});
  l[90] = l[best];
  l[5] = l[best];
  CHECK(draws(p, l, 1)[0] == std::min<int32_t>(5, best));
}

TEST_CASE("top-k, top-p and min-p restrict the support", "[sampler]") {
  const auto l = random_logits(200, 11);
  const auto order = ranked(l);
  SECTION("top-k") {
    dsv4::SamplerParams p;
    p.top_k = 5;
    p.seed = 1;
    const auto d = draws(p, l, 2000);
    const std::set<int32_t> allowed(order.begin(), order.begin() + 5);
    for (int32_t t : d) REQUIRE(allowed.count(t));
    CHECK(std::set<int32_t>(d.begin(), d.end()).size() == 5);
  }
  SECTION("top-p") {
    dsv4::SamplerParams p;
    p.top_p = 0.5f;
    p.seed = 2;
    // The smallest prefix of the ranking whose probability reaches 0.5.
    double z = 0;
    for (float x : l) z += std::exp(static_cast<double>(x) - l[order[0]]);
    double cum = 0;
    size_t keep = 0;
    while (keep < order.size()) {
      cum += std::exp(static_cast<double>(l[order[keep++]]) - l[order[0]]) / z;
      if (cum >= 0.5) break;
    }
    REQUIRE(keep < order.size());
    const std::set<int32_t> allowed(order.begin(), order.begin() + static_cast<long>(keep));
    for (int32_t t : draws(p, l, 2000)) REQUIRE(allowed.count(t));
  }
  SECTION("min-p") {
    dsv4::SamplerParams p;
    p.min_p = 0.2f;
    p.seed = 3;
    for (int32_t t : draws(p, l, 2000)) REQUIRE(std::exp(l[t] - l[order[0]]) >= 0.2 - 1e-6);
  }
}

TEST_CASE("penalties push repeated tokens down", "[sampler]") {
  auto l = random_logits(50, 5);
  const int32_t best = ranked(l)[0], second = ranked(l)[1];
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  const std::vector<int32_t> hist = {best, best, 7};
  p.presence_penalty = 1e4f;
  CHECK(draws(p, l, 1, hist)[0] == second);
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 1e4f;
  CHECK(draws(p, l, 1, hist)[0] == second);
  p.frequency_penalty = 0.0f;
  for (auto& x : l) x = std::min(x, 1.0f);
  l[best] = 2.0f;
  l[second] = 1.5f;
  p.repetition_penalty = 2.0f;  // 2.0 → 1.0 < 1.5
  CHECK(draws(p, l, 1, hist)[0] == second);
  p.repetition_penalty = 1.0f;
  CHECK(draws(p, l, 1, hist)[0] == best);
}

TEST_CASE("invalid parameters and empty rows are rejected", "[sampler]") {
  dsv4::SamplerParams p;
  p.top_p = 0.0f;
  REQUIRE_THROWS_AS(dsv4::Sampler(p), dsv4::Error);
  p = {};
  p.temperature = -1.0f;
  REQUIRE_THROWS_AS(dsv4::Sampler(p), dsv4::Error);
  p = {};
  dsv4::Sampler s(p);
  REQUIRE_THROWS_AS(s.sample({}, {}), dsv4::Error);
}

TEST_CASE("frequency penalty scales with the count, presence does not; repetition penalty on negatives", "[sampler]") {
  // a = 3.0 seen twice, b = 2.0 seen once, c = 1.5 unseen.
  const std::vector<float> l = {3.0f, 2.0f, 1.5f};
  const std::vector<int32_t> hist = {0, 0, 1};
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 0.6f;  // a 1.8, b 1.4, c 1.5
  CHECK(draws(p, l, 1, hist)[0] == 0);
  p.frequency_penalty = 0.8f;  // a 1.4, b 1.2, c 1.5
  CHECK(draws(p, l, 1, hist)[0] == 2);
  p.frequency_penalty = 0.0f;
  p.presence_penalty = 0.8f;   // a 2.2, b 1.2, c 1.5: once per token, whatever the count
  CHECK(draws(p, l, 1, hist)[0] == 0);
  // CTRL rule: a negative logit is multiplied, so a seen token moves away from zero.
  dsv4::SamplerParams r;
  r.temperature = 0.0f;
  r.repetition_penalty = 2.0f;
  CHECK(draws(r, {-1.0f, -1.5f}, 1, {0})[0] == 1);  // -1 → -2 < -1.5
}

TEST_CASE("temperature is applied before top-p", "[sampler]") {
  // logits 2, 1, 0 (+ a tail): at T = 0.5 token 0 alone holds 0.866 ≥ 0.8 of the mass; at T = 1 it
  // holds 0.665, so top-p 0.8 must also keep token 1 (and never token 2 or beyond).
  std::vector<float> l = {2.0f, 1.0f, 0.0f};
  for (int i = 0; i < 5; ++i) l.push_back(-20.0f);
  dsv4::SamplerParams p;
  p.top_p = 0.8f;
  p.seed = 3;
  p.temperature = 0.5f;
  for (int32_t t : draws(p, l, 300)) REQUIRE(t == 0);
  p.temperature = 1.0f;
  std::set<int32_t> seen;
  for (int32_t t : draws(p, l, 300)) seen.insert(t);
  CHECK(seen == std::set<int32_t>{0, 1});
}

TEST_CASE("non-finite logits are an error, not a guess", "[sampler]") {
  std::vector<float> l = {0.5f, NAN, 0.1f};
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  dsv4::Sampler s(p);
  REQUIRE_THROWS_AS(s.sample(l, {}), dsv4::Error);
  l[1] = INFINITY;
  REQUIRE_THROWS_AS(s.sample(l, {}), dsv4::Error);
}
