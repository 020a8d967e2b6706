// Sampler: seeded reproducibility, greedy ties, the support restrictions of top-k / top-p / min-p,
// penalties, parameter validation; chi-square goodness of fit of every filter against the exact
// distribution computed here by a full sort in double; top-p's kept set against the full-sort
// answer on vocabulary-sized rows (random and with many exact ties); logit bias, the prompt /
// generated split of the penalties, raw logprobs, forking a state, the errors. Distributions come
// from seeded generators, never constants.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "catch.hpp"
#include "dsv4/error.hpp"
#include "dsv4/sampler.hpp"

namespace {
std::vector<float> random_logits(int n, uint32_t seed, float sigma = 2.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sigma);
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
// Draws through an explicit state seeded with `seed`.
std::vector<int32_t> state_draws(const dsv4::SamplerParams& p, const std::vector<float>& logits, int n, uint64_t seed) {
  dsv4::Sampler s(p);
  dsv4::SamplerState st(seed);
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits, st).id);
  return out;
}
// Indices sorted by logit descending (ties by id).
std::vector<int32_t> ranked(const std::vector<float>& l) {
  std::vector<int32_t> idx(l.size());
  for (size_t i = 0; i < l.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
  return idx;
}

// The distribution the sampler must draw from, computed independently of it: a full sort by
// (logit desc, id asc), weights exp((l − max)/T) in double, the top-k cut, min-p (weight ≥ min_p,
// the maximum weighing 1), the smallest ranking prefix whose mass reaches top_p of what is left,
// renormalised. No bias or penalties (the tests that use them check other things).
std::vector<double> expected_distribution(const std::vector<float>& l, const dsv4::SamplerParams& p,
                                          std::vector<int32_t> order = {}) {
  if (order.empty()) order = ranked(l);
  size_t n = order.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) n = static_cast<size_t>(p.top_k);
  const double mx = l[static_cast<size_t>(order[0])];
  std::vector<double> w(l.size(), 0.0);
  for (size_t r = 0; r < n; ++r) {
    const double e = std::exp((static_cast<double>(l[static_cast<size_t>(order[r])]) - mx) / p.temperature);
    if (e >= p.min_p) w[static_cast<size_t>(order[r])] = e;
  }
  if (p.top_p < 1.0f) {
    double total = 0;
    for (double x : w) total += x;
    double cum = 0;
    size_t r = 0;
    while (r < n) {
      cum += w[static_cast<size_t>(order[r++])];
      if (cum >= static_cast<double>(p.top_p) * total) break;
    }
    for (; r < n; ++r) w[static_cast<size_t>(order[r])] = 0.0;
  }
  double total = 0;
  for (double x : w) total += x;
  for (double& x : w) x /= total;
  return w;
}

// A head of 30 tokens (16 − 2·log2(1 + h) plus noise) at random ids over a normal tail.
std::vector<float> head_and_tail(int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  std::uniform_int_distribution<int> any(0, n - 1);
  for (int h = 0; h < 30; ++h) v[static_cast<size_t>(any(g))] = 16.0f - 2.0f * std::log2(1.0f + h) + 0.3f * d(g);
  return v;
}

// Size of the kept top-p prefix of the ranking (no other filter), by the same full sort.
size_t top_p_prefix(const std::vector<float>& l, float temperature, float top_p) {
  dsv4::SamplerParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  const auto d = expected_distribution(l, p);
  return static_cast<size_t>(std::count_if(d.begin(), d.end(), [](double x) { return x > 0; }));
}

// χ² critical value at p = 0.001: the table for df ≤ 30, Wilson–Hilferty above (within 0.1 of the
// exact value there).
double chi2_critical_001(int df) {
  static const double table[] = {10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
                                 31.264, 32.909, 34.528, 36.123, 37.697, 39.252, 40.790, 42.312, 43.820, 45.315,
                                 46.797, 48.268, 49.728, 51.179, 52.620, 54.052, 55.476, 56.892, 58.301, 59.703};
  if (df <= 30) return table[df - 1];
  const double k = 2.0 / (9.0 * df), z = 3.090232;
  return df * std::pow(1.0 - k + z * std::sqrt(k), 3.0);
}

struct Fit {
  double stat = 0, critical = 0;
  int df = 0;
  int64_t outside = 0;  // draws of tokens the filters removed
};
// Pearson χ² of `counts` against `expected` (probabilities, one per bin); bins expected under 5
// draws are pooled into one.
Fit chi_square(const std::vector<int64_t>& counts, const std::vector<double>& expected) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  Fit f;
  double pool_e = 0;
  int64_t pool_o = 0;
  int bins = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0) {
      f.outside += counts[i];
      continue;
    }
    const double e = expected[i] * static_cast<double>(n);
    if (e < 5) {
      pool_e += e;
      pool_o += counts[i];
      continue;
    }
    f.stat += (static_cast<double>(counts[i]) - e) * (static_cast<double>(counts[i]) - e) / e;
    ++bins;
  }
  if (pool_e > 0) {
    f.stat += (static_cast<double>(pool_o) - pool_e) * (static_cast<double>(pool_o) - pool_e) / pool_e;
    ++bins;
  }
  f.df = std::max(1, bins - 1);
  f.critical = chi2_critical_001(f.df);
  return f;
}

std::vector<int64_t> histogram(const dsv4::SamplerParams& p, const std::vector<float>& l, int n, uint64_t seed) {
  std::vector<int64_t> counts(l.size(), 0);
  for (int32_t t : state_draws(p, l, n, seed)) ++counts[static_cast<size_t>(t)];
  return counts;
}

// The error a call throws (status and message); fails the test when it throws none.
template <typename F>
dsv4::Error error_of(F&& f) {
  try {
    f();
  } catch (const dsv4::Error& e) {
    return e;
  }
  FAIL("no dsv4::Error thrown");
  return dsv4::Error(dsv4::Status::ok, "");
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// log_softmax of a row in double.
std::vector<double> log_softmax(const std::vector<float>& l) {
  const double mx = *std::max_element(l.begin(), l.end());
  double z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x) - mx);
  std::vector<double> out(l.size());
  for (size_t i = 0; i < l.size(); ++i) out[i] = static_cast<double>(l[i]) - mx - std::log(z);
  return out;
}
}  // namespace

TEST_CASE("same seed, same draws, another seed, other draws", "[sampler]") {
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

TEST_CASE("every path draws reproducibly for a seed on a vocabulary-sized row", "[sampler]") {
  // The rejection draw (no filter, min-p), top-k's and top-p's kept lists, with and without the
  // copied row of bias / penalties: fresh samplers with one seed draw one sequence, through the
  // state and through the history overload; another seed draws another.
  const auto l = random_logits(129280, 1212, 2.5f);
  struct Case {
    float temperature;
    int top_k;
    float top_p, min_p, presence;
  };
  for (const Case c : {Case{1.0f, 0, 1.0f, 0.0f, 0.0f}, Case{0.7f, 0, 1.0f, 0.05f, 0.0f}, Case{0.8f, 40, 1.0f, 0.0f, 0.0f},
                       Case{0.8f, 40, 0.95f, 0.0f, 0.0f}, Case{0.7f, 0, 0.9f, 0.0f, 0.0f}, Case{1.0f, 0, 0.95f, 0.02f, 0.0f},
                       Case{1.0f, 0, 0.9f, 0.0f, 0.5f}}) {
    dsv4::SamplerParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.presence_penalty = c.presence;
    p.seed = 31;
    INFO("T " << c.temperature << " top_k " << c.top_k << " top_p " << c.top_p << " min_p " << c.min_p);
    const auto a = state_draws(p, l, 60, 31);
    CHECK(a == state_draws(p, l, 60, 31));
    if (c.presence == 0.0f) CHECK(draws(p, l, 60) == a);  // the history overload: its own stream, seed 31
    CHECK(state_draws(p, l, 60, 32) != a);
    CHECK(std::set<int32_t>(a.begin(), a.end()).size() > 5);  // really sampling
  }
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
  // Penalties are at most 2 now: a margin of 0.5 lets one flip the order.
  l[static_cast<size_t>(best)] = l[static_cast<size_t>(second)] + 0.5f;
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  const int32_t other = ranked(l)[5];  // a third token in the history, not the runner-up
  const std::vector<int32_t> hist = {best, best, other};
  p.presence_penalty = 2.0f;
  CHECK(draws(p, l, 1, hist)[0] == second);
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.3f;  // 2 · 0.3 > 0.5
  CHECK(draws(p, l, 1, hist)[0] == second);
  p.frequency_penalty = 0.2f;  // 2 · 0.2 < 0.5
  CHECK(draws(p, l, 1, hist)[0] == best);
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

TEST_CASE("frequency penalty scales with the count, presence does not, repetition penalty on negatives", "[sampler]") {
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

TEST_CASE("chi-square: plain temperature sampling follows softmax(l / T)", "[sampler][chi2]") {
  const auto l = random_logits(10, 101, 1.5f);
  for (const float t : {0.7f, 1.3f}) {
    dsv4::SamplerParams p;
    p.temperature = t;
    const Fit f = chi_square(histogram(p, l, 40000, 1000 + static_cast<uint64_t>(t * 10)), expected_distribution(l, p));
    INFO("T = " << t << ": chi2 " << f.stat << " df " << f.df << " critical " << f.critical);
    CHECK(f.df == 9);
    CHECK(f.stat < f.critical);
  }
}

TEST_CASE("chi-square: top-k, top-p, min-p and their combination follow the renormalised distribution",
          "[sampler][chi2]") {
  const auto l = random_logits(12, 202, 1.5f);
  struct Case {
    const char* name;
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  const Case cases[] = {{"top-k 4", 1.0f, 4, 1.0f, 0.0f},
                        {"top-p 0.7", 1.0f, 0, 0.7f, 0.0f},
                        {"min-p 0.1", 1.0f, 0, 1.0f, 0.1f},
                        {"T 0.8, top-k 7, min-p 0.05, top-p 0.85", 0.8f, 7, 0.85f, 0.05f},
                        {"T 1.3, top-k 9, top-p 0.9", 1.3f, 9, 0.9f, 0.0f},
                        {"T 0.6, min-p 0.02, top-p 0.95", 0.6f, 0, 0.95f, 0.02f},
                        {"T 1.5, top-p 0.9", 1.5f, 0, 0.9f, 0.0f},
                        {"T 0.8, top-p 0.5", 0.8f, 0, 0.5f, 0.0f}};
  uint64_t seed = 77;
  for (const Case& c : cases) {
    dsv4::SamplerParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    const auto expected = expected_distribution(l, p);
    const auto kept = std::count_if(expected.begin(), expected.end(), [](double x) { return x > 0; });
    const Fit f = chi_square(histogram(p, l, 40000, seed++), expected);
    INFO(c.name << ": " << kept << " kept, chi2 " << f.stat << " df " << f.df << " critical " << f.critical);
    REQUIRE(kept > 1);
    REQUIRE(kept < 12);  // every case really filters
    CHECK(f.outside == 0);
    CHECK(f.stat < f.critical);
  }
}

TEST_CASE("chi-square: draws across many blocks, banned tokens and a partial last block", "[sampler][chi2]") {
  // V = 5000 spans a whole group chunk of the rejection draw (4096 tokens) and a partial one, and
  // many blocks of the passes; bins of 50 consecutive ids check the envelope's groups and top-p's
  // walk over its kept list. Tokens 0..599 are banned (−inf): whole groups and blocks weigh nothing.
  auto l = random_logits(5000, 303, 1.0f);
  for (size_t i = 0; i < 600; ++i) l[i] = -INFINITY;
  struct Case {
    float min_p, top_p;
  };
  for (const Case c : {Case{0.0f, 1.0f}, Case{0.05f, 1.0f}, Case{0.0f, 0.9f}, Case{0.02f, 0.95f}}) {
    const float min_p = c.min_p;
    dsv4::SamplerParams p;
    p.min_p = min_p;
    p.top_p = c.top_p;
    p.temperature = 0.9f;
    const auto expected = expected_distribution(l, p);
    const auto counts = histogram(p, l, c.top_p < 1.0f ? 20000 : 40000, 4242);
    std::vector<int64_t> bc(100, 0);
    std::vector<double> be(100, 0.0);
    int64_t outside = 0;
    for (size_t i = 0; i < l.size(); ++i) {
      bc[i / 50] += counts[i];
      be[i / 50] += expected[i];
      if (expected[i] == 0) outside += counts[i];
    }
    const Fit f = chi_square(bc, be);
    INFO("min_p " << min_p << " top_p " << c.top_p << ": chi2 " << f.stat << " df " << f.df << " critical "
                  << f.critical);
    CHECK(outside == 0);
    CHECK(f.stat < f.critical);
  }
}

TEST_CASE("top-k keeps the lowest ids of a tied group at the cut", "[sampler]") {
  // Four random values, each on three random ids: top-k 2 and 4 cut inside a tied group.
  std::mt19937 g(404);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> l;
  for (int v = 0; v < 4; ++v) {
    const float x = d(g);
    for (int r = 0; r < 3; ++r) l.push_back(x);
  }
  std::shuffle(l.begin(), l.end(), g);
  const auto order = ranked(l);
  REQUIRE(l[order[2]] == l[order[0]]);  // the top group has three ids
  for (const int k : {2, 4}) {
    dsv4::SamplerParams p;
    p.top_k = k;
    p.temperature = 1.5f;
    const std::set<int32_t> expected(order.begin(), order.begin() + k);
    const auto d2 = state_draws(p, l, 3000, 9);
    CHECK(std::set<int32_t>(d2.begin(), d2.end()) == expected);
  }
}

TEST_CASE("top-p keeps exactly the full-sort prefix on vocabulary-sized rows", "[sampler]") {
  constexpr int V = 129280;
  // A kept set draws the same token for a seed whichever filter found it (the draw walks the kept
  // tokens in id order), so top-p, which keeps a prefix of K tokens by the full sort, must draw
  // exactly what top-k = K draws; a kept set one token off changes the kept mass and with it most
  // of the draws. Every draw must also rank inside the prefix. Rows: random normal; rounded to
  // multiples of 0.5 (thousands of exact ties at the cut); one dominant token over a normal tail;
  // a head of 30 tokens over a normal tail (rows where top-p's first guess of the cut's depth falls
  // short and deeper bands follow); with min-p as well.
  enum Kind { normal, ties, dominant, head };
  struct Case {
    Kind kind;
    uint32_t row_seed;
    float sigma, temperature, top_p, min_p;
  };
  const Case cases[] = {
      {normal, 1, 3.0f, 1.0f, 0.5f, 0.0f},   {normal, 2, 3.0f, 0.8f, 0.9f, 0.0f},
      {normal, 3, 2.5f, 0.7f, 0.95f, 0.0f},  {normal, 4, 2.5f, 1.0f, 0.99f, 0.0f},
      {normal, 5, 2.5f, 1.3f, 0.9f, 0.0f},   {ties, 6, 3.0f, 1.0f, 0.5f, 0.0f},
      {ties, 7, 2.5f, 0.8f, 0.9f, 0.0f},     {ties, 8, 2.5f, 0.7f, 0.95f, 0.0f},
      {ties, 9, 2.5f, 1.0f, 0.99f, 0.0f},    {dominant, 10, 2.0f, 1.0f, 0.9f, 0.0f},
      {dominant, 11, 2.0f, 1.0f, 0.99f, 0.0f}, {head, 2, 2.0f, 1.0f, 0.9f, 0.0f},
      {head, 4, 2.0f, 1.0f, 0.9f, 0.0f},     {head, 9, 2.0f, 1.0f, 0.95f, 0.0f},
      {head, 12, 2.0f, 1.0f, 0.9f, 0.0f},    {normal, 13, 2.5f, 0.7f, 0.9f, 0.001f},
      {ties, 14, 2.5f, 1.0f, 0.95f, 0.01f},  {head, 21, 2.0f, 1.0f, 0.9f, 1e-5f}};
  std::set<size_t> sizes;
  for (const Case& c : cases) {
    auto l = c.kind == head ? head_and_tail(V, c.row_seed) : random_logits(V, c.row_seed, c.sigma);
    if (c.kind == ties)
      for (auto& x : l) x = std::round(x * 2.0f) / 2.0f;
    if (c.kind == dominant) {
      // One token well above the rest: alone it holds about 0.85 of the mass (0.9 needs the tail)
      // at row 10, and 0.98 at row 11 (0.99 needs the tail).
      double z = 0;
      for (float x : l) z += std::exp(static_cast<double>(x));
      const double share = c.row_seed == 10 ? 0.85 : 0.98;
      l[static_cast<size_t>(c.row_seed * 997 % V)] = static_cast<float>(std::log(z * share / (1 - share)));
    }
    dsv4::SamplerParams pp, pk;
    pp.temperature = pk.temperature = c.temperature;
    pp.min_p = pk.min_p = c.min_p;
    pp.top_p = c.top_p;
    const auto order = ranked(l);
    const auto expected = expected_distribution(l, pp, order);
    const size_t K = static_cast<size_t>(std::count_if(expected.begin(), expected.end(), [](double x) { return x > 0; }));
    INFO("row " << c.row_seed << " kind " << c.kind << ": T " << c.temperature << " top_p " << c.top_p << " min_p "
                << c.min_p << " keeps " << K);
    REQUIRE(K >= 1);
    REQUIRE(K < static_cast<size_t>(V));
    for (size_t r = 0; r < K; ++r) REQUIRE(expected[static_cast<size_t>(order[r])] > 0);  // a prefix
    if (c.kind == ties) REQUIRE(l[static_cast<size_t>(order[K - 1])] == l[static_cast<size_t>(order[K])]);
    if (c.kind == dominant) REQUIRE(K > 1);
    sizes.insert(K);
    std::vector<size_t> rank(V);
    for (size_t r = 0; r < order.size(); ++r) rank[static_cast<size_t>(order[r])] = r;
    pk.top_k = static_cast<int>(K);
    const int n = K > 4096 ? 40 : K > 1024 ? 100 : 200;  // top-k = K selects and sorts its K on every draw
    const auto a = state_draws(pp, l, n, 11), b = state_draws(pk, l, n, 11);
    CHECK(a == b);
    for (int32_t t : a) REQUIRE(rank[static_cast<size_t>(t)] < K);
  }
  CHECK(*sizes.begin() < 64);      // small kept sets
  CHECK(*sizes.rbegin() > 20000);  // and large ones
}

TEST_CASE("top-p's boundary token is kept and the next one is not (vocabulary-sized row)", "[sampler]") {
  // A head of 8 heavy tokens at random ids over a light tail (about 1% of the mass), two of them
  // tied; top_p puts the cut exactly between the tied pair. Every kept head token is drawn with
  // probability ≥ 2%, the first dropped one would be too: the observed set is the kept set.
  constexpr int V = 129280;
  std::mt19937 g(505);
  auto l = random_logits(V, 506, 1.0f);
  for (auto& x : l) x -= 6.0f;
  std::uniform_int_distribution<int> any(0, V - 1);
  std::uniform_real_distribution<float> head(8.0f, 9.5f);
  std::set<int> ids;
  while (ids.size() < 8) ids.insert(any(g));
  for (int id : ids) l[static_cast<size_t>(id)] = head(g);
  // The tie: the 4th and 5th best get one value.
  auto order = ranked(l);
  l[static_cast<size_t>(order[4])] = l[static_cast<size_t>(order[3])];
  order = ranked(l);
  REQUIRE(order[3] < order[4]);
  const double top = l[static_cast<size_t>(order[0])];
  auto weight = [&](int r) { return std::exp(static_cast<double>(l[static_cast<size_t>(order[r])]) - top); };
  double z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x) - top);
  const double before = weight(0) + weight(1) + weight(2), tied = weight(3);
  dsv4::SamplerParams p;
  p.top_p = static_cast<float>((before + 0.5 * tied) / z);  // needs the 4th, not the 5th
  REQUIRE(top_p_prefix(l, 1.0f, p.top_p) == 4);
  const auto d = state_draws(p, l, 4000, 21);
  CHECK(std::set<int32_t>(d.begin(), d.end()) == std::set<int32_t>(order.begin(), order.begin() + 4));
}

TEST_CASE("logit_bias bans and forces tokens", "[sampler]") {
  const auto l = random_logits(64, 606);
  const auto order = ranked(l);
  const int32_t best = order[0], second = order[1];
  std::mt19937 g(607);
  const int32_t forced = std::uniform_int_distribution<int32_t>(10, 63)(g);
  SECTION("a bias of -100 bans") {
    dsv4::SamplerParams p;
    p.temperature = 0.0f;
    p.logit_bias = {{best, -100.0f}};
    CHECK(state_draws(p, l, 1, 1)[0] == second);
    p.temperature = 1.0f;
    for (int32_t t : state_draws(p, l, 3000, 2)) REQUIRE(t != best);
    p.top_p = 0.9f;
    for (int32_t t : state_draws(p, l, 1000, 3)) REQUIRE(t != best);
  }
  SECTION("a bias of +100 forces, and several entries add up") {
    dsv4::SamplerParams p;
    p.temperature = 0.0f;
    p.logit_bias = {{forced, 100.0f}};
    CHECK(state_draws(p, l, 1, 1)[0] == forced);
    p.temperature = 1.0f;
    for (int32_t t : state_draws(p, l, 500, 2)) REQUIRE(t == forced);
    p.logit_bias = {{forced, 50.0f}, {forced, 50.0f}};
    p.top_k = 5;
    for (int32_t t : state_draws(p, l, 500, 3)) REQUIRE(t == forced);
  }
  SECTION("bias ids are checked: negative at construction, ≥ V at the draw") {
    dsv4::SamplerParams p;
    p.logit_bias = {{-1, 1.0f}};
    auto e = error_of([&] { dsv4::Sampler s(p); });
    CHECK(e.status() == dsv4::Status::invalid_argument);
    CHECK(contains(e.what(), "logit_bias"));
    p.logit_bias = {{3, NAN}};
    CHECK(contains(error_of([&] { dsv4::Sampler s(p); }).what(), "logit_bias"));
    p.logit_bias = {{64, 1.0f}};
    dsv4::Sampler s(p);
    dsv4::SamplerState st(1);
    e = error_of([&] { s.sample(l, st); });
    CHECK(e.status() == dsv4::Status::invalid_argument);
    CHECK(contains(e.what(), "logit_bias id 64"));
    p.logit_bias = {{63, 1.0f}};
    dsv4::Sampler ok(p);
    CHECK_NOTHROW(ok.sample(l, st));
  }
}

TEST_CASE("frequency and presence count generated tokens only, repetition penalty counts the prompt", "[sampler]") {
  auto l = random_logits(50, 707);
  const auto order = ranked(l);
  const int32_t best = order[0], second = order[1];
  l[static_cast<size_t>(best)] = l[static_cast<size_t>(second)] + 1.0f;
  SECTION("frequency and presence") {
    dsv4::SamplerParams p;
    p.temperature = 0.0f;
    p.frequency_penalty = 2.0f;
    p.presence_penalty = 2.0f;
    dsv4::Sampler s(p);
    dsv4::SamplerState st(5);
    const std::vector<int32_t> prompt = {best, best, best};
    st.add_prompt(prompt);
    st.add_generated(order[20]);          // something generated already: the penalties are live
    CHECK(s.sample(l, st).id == best);    // the prompt does not count: best is drawn and recorded
    CHECK(st.generated[best] == 1);
    CHECK(st.seen[best] == 4);
    CHECK(s.sample(l, st).id == second);  // now best carries 2 + 2 > its margin of 1
    CHECK(st.generated[second] == 1);
  }
  SECTION("frequency scales with the generated count, not the seen count") {
    dsv4::SamplerParams p;
    p.temperature = 0.0f;
    p.frequency_penalty = 0.3f;
    dsv4::Sampler s(p);
    dsv4::SamplerState st(5);
    const std::vector<int32_t> prompt = {best, best, best, best, best};
    st.add_prompt(prompt);
    st.add_generated(best);               // seen 6 times (1.8 > 1), generated once (0.3 < 1)
    CHECK(s.sample(l, st).id == best);
    st.add_generated(best);
    st.add_generated(best);
    st.add_generated(best);               // generated 5 times now: 1.5 > 1
    CHECK(s.sample(l, st).id == second);
  }
  SECTION("repetition penalty over the prompt") {
    for (auto& x : l) x = std::min(x, 1.0f);
    l[static_cast<size_t>(best)] = 2.0f;
    l[static_cast<size_t>(second)] = 1.5f;
    dsv4::SamplerParams p;
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;  // 2.0 → 1.0 < 1.5
    dsv4::Sampler s(p);
    dsv4::SamplerState fresh(1), prompted(1);
    CHECK(s.sample(l, fresh).id == best);
    const std::vector<int32_t> prompt = {best};
    prompted.add_prompt(prompt);
    CHECK(s.sample(l, prompted).id == second);
  }
}

TEST_CASE("logprobs are the raw log_softmax, top-n best first with ties to the lower id", "[sampler]") {
  auto l = random_logits(16, 808);
  // A tied triple inside the top few.
  const auto order0 = ranked(l);
  l[static_cast<size_t>(order0[4])] = l[static_cast<size_t>(order0[2])];
  l[static_cast<size_t>(order0[7])] = l[static_cast<size_t>(order0[2])];
  const auto ref = log_softmax(l);
  const auto order = ranked(l);
  SECTION("every token, whatever the filters, bias and penalties") {
    dsv4::SamplerParams p;
    p.logprobs = 20;  // more than V: all 16 come back
    p.temperature = 0.6f;
    p.top_k = 3;
    p.repetition_penalty = 1.3f;
    p.logit_bias = {{order[9], 5.0f}};
    dsv4::Sampler s(p);
    dsv4::SamplerState st(3);
    const std::vector<int32_t> prompt = {order[0], order[1]};
    st.add_prompt(prompt);
    for (int i = 0; i < 20; ++i) {
      const auto r = s.sample(l, st);
      REQUIRE(r.top.size() == l.size());
      CHECK(r.logprob == Approx(ref[static_cast<size_t>(r.id)]).margin(1e-5));
      double sum = 0;
      for (size_t j = 0; j < r.top.size(); ++j) {
        sum += std::exp(static_cast<double>(r.top[j].logprob));
        CHECK(r.top[j].id == order[j]);  // best first, the tied triple by id
        CHECK(r.top[j].logprob == Approx(ref[static_cast<size_t>(order[j])]).margin(1e-5));
      }
      CHECK(sum == Approx(1.0).margin(1e-5));
    }
  }
  SECTION("the default settings (T = 1, the raw row) and T = 1.7") {
    for (const float t : {1.0f, 1.7f}) {
      dsv4::SamplerParams p;
      p.logprobs = 3;
      p.temperature = t;
      dsv4::Sampler s(p);
      dsv4::SamplerState st(8);
      for (int i = 0; i < 10; ++i) {
        const auto r = s.sample(l, st);
        CHECK(r.logprob == Approx(ref[static_cast<size_t>(r.id)]).margin(1e-5));
        REQUIRE(r.top.size() == 3);
        for (size_t j = 0; j < 3; ++j)
          CHECK(r.top[j].logprob == Approx(ref[static_cast<size_t>(order[j])]).margin(1e-5));
      }
    }
  }
  SECTION("logprobs 0: the sampled token's only; -1: none; greedy too") {
    dsv4::SamplerParams p;
    p.logprobs = 0;
    p.temperature = 0.0f;
    dsv4::Sampler s(p);
    dsv4::SamplerState st(1);
    const auto r = s.sample(l, st);
    CHECK(r.id == order[0]);
    CHECK(r.top.empty());
    CHECK(r.logprob == Approx(ref[static_cast<size_t>(order[0])]).margin(1e-5));
    p.logprobs = -1;
    dsv4::Sampler none(p);
    CHECK(none.sample(l, st).top.empty());
  }
  SECTION("top-5 of a vocabulary-sized row") {
    const auto big = random_logits(129280, 809, 2.5f);
    const auto big_ref = log_softmax(big);
    const auto big_order = ranked(big);
    dsv4::SamplerParams p;
    p.logprobs = 5;
    p.temperature = 0.8f;
    p.top_p = 0.9f;
    dsv4::Sampler s(p);
    dsv4::SamplerState st(4);
    const auto r = s.sample(big, st);
    REQUIRE(r.top.size() == 5);
    for (size_t j = 0; j < 5; ++j) {
      CHECK(r.top[j].id == big_order[j]);
      CHECK(r.top[j].logprob == Approx(big_ref[static_cast<size_t>(big_order[j])]).margin(1e-4));
    }
    CHECK(r.logprob == Approx(big_ref[static_cast<size_t>(r.id)]).margin(1e-4));
  }
}

TEST_CASE("a copied state forks: both copies draw the same continuation", "[sampler]") {
  const auto l = random_logits(3000, 909, 2.0f);
  dsv4::SamplerParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.frequency_penalty = 0.4f;
  p.presence_penalty = 0.3f;
  p.repetition_penalty = 1.2f;
  p.seed = 99;
  dsv4::Sampler s(p), other(p);
  dsv4::SamplerState st(p.seed);
  std::mt19937 g(910);
  std::vector<int32_t> prompt(40);
  for (auto& t : prompt) t = std::uniform_int_distribution<int32_t>(0, 2999)(g);
  st.add_prompt(prompt);
  for (int i = 0; i < 25; ++i) s.sample(l, st);
  dsv4::SamplerState fork = st;
  std::vector<int32_t> a, b;
  for (int i = 0; i < 40; ++i) a.push_back(s.sample(l, st).id);
  for (int i = 0; i < 40; ++i) b.push_back(other.sample(l, fork).id);
  CHECK(a == b);
  CHECK(st.rng == fork.rng);
  CHECK(st.generated == fork.generated);
  CHECK(std::set<int32_t>(a.begin(), a.end()).size() > 5);  // really sampling
}

TEST_CASE("the history overload counts the history each call and keeps its own seeded stream", "[sampler]") {
  auto l = random_logits(80, 111);
  const auto order = ranked(l);
  l[static_cast<size_t>(order[0])] = l[static_cast<size_t>(order[1])] + 1.0f;
  dsv4::SamplerParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 2.0f;
  dsv4::Sampler s(p);
  const std::vector<int32_t> none, with_best = {order[0]};
  CHECK(s.sample(l, none) == order[0]);
  CHECK(s.sample(l, none) == order[0]);  // the first call's draw was not kept
  CHECK(s.sample(l, with_best) == order[1]);
  CHECK(s.sample(l, none) == order[0]);
  // Without penalties its stream is a state seeded with params.seed, advancing call after call.
  dsv4::SamplerParams q;
  q.temperature = 1.1f;
  q.top_k = 20;
  q.seed = 1234;
  CHECK(draws(q, l, 100) == state_draws(q, l, 100, 1234));
}

TEST_CASE("parameter validation names the field", "[sampler]") {
  struct Bad {
    const char* field;
    void (*set)(dsv4::SamplerParams&);
  };
  const Bad bad[] = {
      {"temperature", [](dsv4::SamplerParams& p) { p.temperature = -0.5f; }},
      {"temperature", [](dsv4::SamplerParams& p) { p.temperature = NAN; }},
      {"temperature", [](dsv4::SamplerParams& p) { p.temperature = INFINITY; }},
      {"top_k", [](dsv4::SamplerParams& p) { p.top_k = -1; }},
      {"top_p", [](dsv4::SamplerParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](dsv4::SamplerParams& p) { p.top_p = 1.01f; }},
      {"top_p", [](dsv4::SamplerParams& p) { p.top_p = NAN; }},
      {"min_p", [](dsv4::SamplerParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](dsv4::SamplerParams& p) { p.min_p = 1.5f; }},
      {"min_p", [](dsv4::SamplerParams& p) { p.min_p = NAN; }},
      {"repetition_penalty", [](dsv4::SamplerParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](dsv4::SamplerParams& p) { p.repetition_penalty = INFINITY; }},
      {"repetition_penalty", [](dsv4::SamplerParams& p) { p.repetition_penalty = NAN; }},
      {"frequency_penalty", [](dsv4::SamplerParams& p) { p.frequency_penalty = 2.5f; }},
      {"frequency_penalty", [](dsv4::SamplerParams& p) { p.frequency_penalty = -2.01f; }},
      {"frequency_penalty", [](dsv4::SamplerParams& p) { p.frequency_penalty = NAN; }},
      {"presence_penalty", [](dsv4::SamplerParams& p) { p.presence_penalty = 3.0f; }},
      {"presence_penalty", [](dsv4::SamplerParams& p) { p.presence_penalty = -INFINITY; }},
      {"logprobs", [](dsv4::SamplerParams& p) { p.logprobs = -2; }},
      {"logprobs", [](dsv4::SamplerParams& p) { p.logprobs = 21; }},
      {"logit_bias", [](dsv4::SamplerParams& p) { p.logit_bias = {{5, INFINITY}}; }},
  };
  for (const Bad& b : bad) {
    dsv4::SamplerParams p;
    b.set(p);
    const auto e = error_of([&] { dsv4::Sampler s(p); });
    INFO(b.field << ": " << e.what());
    CHECK(e.status() == dsv4::Status::invalid_argument);
    CHECK(contains(e.what(), std::string("sampler: ") + b.field));
    CHECK(contains(e.what(), "must be"));
  }
  // The edges of every range are valid.
  dsv4::SamplerParams edge;
  edge.temperature = 0.0f;
  edge.top_p = 1.0f;
  edge.min_p = 1.0f;
  edge.frequency_penalty = -2.0f;
  edge.presence_penalty = 2.0f;
  edge.logprobs = 20;
  CHECK_NOTHROW(dsv4::Sampler(edge));
  edge.min_p = 0.0f;
  edge.logprobs = -1;
  edge.frequency_penalty = 2.0f;
  edge.presence_penalty = -2.0f;
  CHECK_NOTHROW(dsv4::Sampler(edge));
}

TEST_CASE("errors name the token: NaN / +inf from the model, overflow after bias, an all-banned row", "[sampler]") {
  auto l = random_logits(40, 121);
  dsv4::SamplerParams p;
  dsv4::SamplerState st(1);
  for (const float t : {0.0f, 1.0f}) {  // the greedy and the one-pass checks
    p.temperature = t;
    dsv4::Sampler s(p);
    auto bad = l;
    bad[17] = NAN;
    auto e = error_of([&] { s.sample(bad, st); });
    CHECK(e.status() == dsv4::Status::backend);
    CHECK(contains(e.what(), "token 17"));
    bad[17] = INFINITY;
    e = error_of([&] { s.sample(bad, st); });
    CHECK(e.status() == dsv4::Status::backend);
    CHECK(contains(e.what(), "token 17"));
  }
  p = {};
  p.logit_bias = {{3, 3.0e38f}};
  auto big = l;
  big[3] = 3.0e38f;
  dsv4::Sampler s(p);
  auto e = error_of([&] { s.sample(big, st); });
  CHECK(e.status() == dsv4::Status::invalid_argument);
  CHECK(contains(e.what(), "token 3"));
  std::vector<float> banned(600, -INFINITY);
  dsv4::Sampler plain(dsv4::SamplerParams{});
  CHECK(error_of([&] { plain.sample(banned, st); }).status() == dsv4::Status::invalid_argument);
}

TEST_CASE("negative-infinity logits are banned tokens in every path", "[sampler]") {
  auto l = random_logits(2000, 131, 1.0f);
  std::mt19937 g(132);
  std::set<int32_t> banned;
  while (banned.size() < 300) banned.insert(std::uniform_int_distribution<int32_t>(0, 1999)(g));
  // The best tokens are among the banned, so every filter meets them.
  const auto order = ranked(l);
  for (int r = 0; r < 10; ++r) banned.insert(order[static_cast<size_t>(r)]);
  for (int32_t t : banned) l[static_cast<size_t>(t)] = -INFINITY;
  struct Case {
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  for (const Case c : {Case{0.0f, 0, 1.0f, 0.0f}, Case{1.0f, 0, 1.0f, 0.0f}, Case{1.0f, 0, 1.0f, 0.2f},
                       Case{1.0f, 30, 1.0f, 0.0f}, Case{1.0f, 0, 0.8f, 0.0f}, Case{0.7f, 50, 0.9f, 0.1f}}) {
    dsv4::SamplerParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    for (int32_t t : state_draws(p, l, 1000, 5)) REQUIRE(banned.count(t) == 0);
  }
}

TEST_CASE("a tiny temperature concentrates on the maximum", "[sampler]") {
  const auto l = random_logits(500, 141);
  dsv4::SamplerParams p;
  p.temperature = 1e-6f;
  for (int32_t t : state_draws(p, l, 200, 3)) REQUIRE(t == ranked(l)[0]);
  p.temperature = 1e-38f;  // log2(e)/T overflows float: clamped, still the maximum
  for (int32_t t : state_draws(p, l, 50, 4)) REQUIRE(t == ranked(l)[0]);
}
