// Official numerics (include/dsv4/numerics.hpp and the CPU backend's `official` mode): the §5
// helpers against independent brute-force implementations on fresh random inputs, and the whole
// forward in official numerics — schedule-invariant (bit-identical under any chunking), different
// from the reference, and within quantisation noise of the float64 fixtures (the figures are
// printed; bounds below are loose sanity bounds, the precise gate is CUDA vs CPU-official).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "catch.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/numerics.hpp"
#include "dsv4/quant.hpp"
#include "dsv4/safetensors.hpp"
#include "small_model.hpp"

namespace {
// Nearest value of a code grid (ties: the even code), found by scanning every code.
template <typename Decode>
float nearest_code(float v, int codes, Decode dec) {
  float best = 0;
  double bd = INFINITY;
  int bc = -1;
  for (int c = 0; c < codes; ++c) {
    const float g = dec(static_cast<uint8_t>(c));
    if (!std::isfinite(g)) continue;
    const double d = std::fabs(static_cast<double>(g) - v);
    // Ties go to the code whose mantissa LSB is 0 (the even code), as RNE does.
    if (d < bd || (d == bd && (c & 1) == 0 && (bc & 1) == 1)) {
      bd = d;
      best = g;
      bc = c;
    }
  }
  return best;
}
// 2^ceil(log2(v)) of the f32 product the spec's scale rule forms (a · fl32(1/c) rounded to f32).
float pow2_ceil(float v) { return static_cast<float>(std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(static_cast<double>(v)))))); }
std::vector<float> randn(size_t n, float sigma, std::mt19937& g) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dsv4::round_bf16(d(g));
  return v;
}
}  // namespace

TEST_CASE("FP8 1x128 activation quantisation matches a brute-force grid search", "[numerics]") {
  std::mt19937 g(31);
  for (int trial = 0; trial < 40; ++trial) {
    const size_t n = 128 * (1 + trial % 3) + (trial % 5) * 17;  // odd tails too
    auto x = randn(n, trial % 2 ? 3.0f : 0.02f, g);
    if (trial == 7) std::fill(x.begin(), x.begin() + 128, 0.0f);  // an all-zero block: the 1e-4 floor
    auto y = x;
    dsv4::fp8_act_quant_dequant(y.data(), static_cast<int64_t>(n));
    for (size_t b = 0; b < n; b += 128) {
      const size_t e = std::min(n, b + 128);
      double amax = 0;
      for (size_t i = b; i < e; ++i) amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      const float s = pow2_ceil(static_cast<float>(std::max(amax, 1e-4)) * (1.0f / 448.0f));
      for (size_t i = b; i < e; ++i) {
        const float want = nearest_code(std::clamp(x[i] / s, -448.0f, 448.0f), 256, dsv4::e4m3_to_f32) * s;
        INFO("trial " << trial << " i " << i << " x " << x[i]);
        REQUIRE(y[i] == want);
      }
    }
    auto z = y;  // idempotent: quantised values are on the grid
    dsv4::fp8_act_quant_dequant(z.data(), static_cast<int64_t>(n));
    CHECK(z == y);
  }
}

TEST_CASE("KV FP8 and indexer FP4 simulations match a brute-force grid search", "[numerics]") {
  std::mt19937 g(32);
  for (int trial = 0; trial < 30; ++trial) {
    const size_t n = 64 * (1 + trial % 7) + (trial % 3) * 11;
    const auto x = randn(n, 1.5f, g);
    auto y8 = x, y4 = x;
    dsv4::fp8_simulate_bf16(y8.data(), static_cast<int64_t>(n));
    dsv4::fp4_simulate_bf16(y4.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) {
      const size_t b8 = i / 64 * 64, b4 = i / 32 * 32;
      double a8 = 0, a4 = 0;
      for (size_t k = b8; k < std::min(n, b8 + 64); ++k) a8 = std::max(a8, std::fabs(static_cast<double>(x[k])));
      for (size_t k = b4; k < std::min(n, b4 + 32); ++k) a4 = std::max(a4, std::fabs(static_cast<double>(x[k])));
      const float s8 = pow2_ceil(static_cast<float>(std::max(a8, 1e-4)) * (1.0f / 448.0f));
      const float s4 = pow2_ceil(static_cast<float>(std::max(a4, 6.0 * 1.1754943508222875e-38)) * (1.0f / 6.0f));
      const float w8 = dsv4::round_bf16(nearest_code(std::clamp(x[i] / s8, -448.0f, 448.0f), 256, dsv4::e4m3_to_f32) * s8);
      const float w4 = dsv4::round_bf16(nearest_code(std::clamp(x[i] / s4, -6.0f, 6.0f), 16, dsv4::e2m1_to_f32) * s4);
      INFO("trial " << trial << " i " << i << " x " << x[i]);
      REQUIRE(y8[i] == w8);
      REQUIRE(y4[i] == w4);
    }
  }
}

TEST_CASE("Hadamard rotation: the Sylvester matrix / sqrt(n), bf16 out", "[numerics]") {
  std::mt19937 g(33);
  for (int n : {32, 64, 128}) {
    for (int trial = 0; trial < 10; ++trial) {
      const auto x = randn(static_cast<size_t>(n), 2.0f, g);
      auto y = x;
      dsv4::hadamard_bf16(y.data(), n);
      for (int i = 0; i < n; ++i) {
        double acc = 0;
        for (int j = 0; j < n; ++j) acc += (__builtin_popcount(static_cast<unsigned>(i & j)) & 1 ? -1.0 : 1.0) * x[j];
        acc /= std::sqrt(static_cast<double>(n));
        // f32 butterflies vs the exact sum: at most one bf16 ulp apart.
        const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(acc), 1e-30)) - 7);
        INFO("n " << n << " i " << i);
        REQUIRE(std::fabs(y[i] - acc) <= ulp);
        REQUIRE(y[i] == dsv4::round_bf16(y[i]));
      }
    }
  }
}

TEST_CASE("official per-head norm follows the bf16 tensor arithmetic of the release", "[numerics]") {
  std::mt19937 g(34);
  for (int trial = 0; trial < 20; ++trial) {
    auto q = randn(512, trial % 2 ? 0.3f : 4.0f, g);
    auto y = q;
    dsv4::head_rms_norm_bf16(y.data(), 512, 1e-6f);
    float acc = 0;
    for (float v : q) acc += dsv4::round_bf16(v * v);
    const float s = dsv4::round_bf16(acc / 512.0f);
    const float r = dsv4::round_bf16(1.0f / std::sqrt(dsv4::round_bf16(s + 1e-6f)));
    double ms = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      REQUIRE(y[i] == dsv4::round_bf16(q[i] * r));
      ms += static_cast<double>(y[i]) * y[i];
    }
    CHECK(std::sqrt(ms / 512.0) == Approx(1.0).epsilon(0.02));  // normalised up to bf16 noise
  }
}

TEST_CASE("official numerics: chunking is bit-identical, and it is not the reference", "[numerics][forward]") {
  dsv4::LoadOptions o;
  o.numerics = dsv4::Numerics::official;
  auto off = dsv4_test::load_small(o);
  auto ref = dsv4_test::load_small();
  std::mt19937 g(35);
  std::uniform_int_distribution<int32_t> tok(0, off->config().vocab_size - 1);
  std::vector<int32_t> ids(70);
  for (auto& t : ids) t = tok(g);
  auto run = [&](dsv4::Model& m, std::vector<size_t> sizes) {
    auto& be = m.backend();
    const auto h = be.create_sequence(4096);
    std::vector<float> all, rows;
    size_t pos = 0, ci = 0;
    while (pos < ids.size()) {
      const size_t n = std::min(ids.size() - pos, sizes[std::min(ci++, sizes.size() - 1)]);
      dsv4::ForwardChunk c;
      c.seq = h;
      c.tokens = std::span<const int32_t>(ids).subspan(pos, n);
      c.logits = dsv4::LogitsMode::all;
      c.logits_out = &rows;
      REQUIRE(be.forward({&c, 1}).ok());
      all.insert(all.end(), rows.begin(), rows.end());
      pos += n;
    }
    be.release_sequence(h);
    return all;
  };
  const auto full = run(*off, {ids.size()});
  CHECK(run(*off, {1}) == full);
  CHECK(run(*off, {3, 7, 17, 2, 1}) == full);
  const auto r = run(*ref, {ids.size()});
  double mx = 0, mean = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    mx = std::max(mx, std::fabs(static_cast<double>(r[i]) - full[i]));
    mean += std::fabs(static_cast<double>(r[i]) - full[i]);
  }
  mean /= static_cast<double>(r.size());
  std::printf("  small model, 70 tokens: official vs reference max|dlogit| %.3g mean %.3g\n", mx, mean);
  CHECK(mx > 0);  // the simulations really run
  for (float v : full) REQUIRE(std::isfinite(v));
}

TEST_CASE("official numerics against the float64 fixtures (figures)", "[numerics][fixtures]") {
  namespace fs = std::filesystem;
  for (const char* name : {"tiny-a", "tiny-b"}) {
    const fs::path d = fs::path(dsv4_test::shared_dir()) / "fixtures" / name;
    if (!fs::exists(d / "model" / "config.json")) {
      WARN("fixture missing: skipped");
      return;
    }
    dsv4::LoadOptions o;
    o.numerics = dsv4::Numerics::official;
    o.load_tokenizer = false;
    auto m = dsv4::Model::load((d / "model").string(), o, dsv4::Logger(dsv4::LogLevel::warn));
    const int64_t V = m->config().vocab_size;
    dsv4::SafetensorsFile ref((d / "reference.safetensors").string());
    for (int p = 0;; ++p) {
      const dsv4::TensorView* ti = ref.find(fmt::format("prompt{}.input_ids", p));
      if (!ti) break;
      const auto ids = dsv4::to_i32(*ti);
      const auto want = dsv4::to_f32(*ref.find(fmt::format("prompt{}.logits", p)));
      auto& be = m->backend();
      const auto h = be.create_sequence(static_cast<int64_t>(ids.size()));
      std::vector<float> got;
      dsv4::ForwardChunk c;
      c.seq = h;
      c.tokens = ids;
      c.logits = dsv4::LogitsMode::all;
      c.logits_out = &got;
      REQUIRE(be.forward({&c, 1}).ok());
      be.release_sequence(h);
      double mx = 0, mean = 0;
      int64_t agree = 0;
      const int64_t T = static_cast<int64_t>(ids.size());
      for (int64_t t = 0; t < T; ++t) {
        const float* a = got.data() + t * V;
        const float* b = want.data() + t * V;
        agree += (std::max_element(a, a + V) - a) == (std::max_element(b, b + V) - b);
        for (int64_t v = 0; v < V; ++v) {
          const double dd = std::fabs(static_cast<double>(a[v]) - b[v]);
          mx = std::max(mx, dd);
          mean += dd;
        }
      }
      mean /= static_cast<double>(T * V);
      std::printf("  %s prompt%d (%lld tokens): official vs float64 max|dlogit| %.3g mean %.3g top-1 %.1f%%\n", name, p,
                  static_cast<long long>(T), mx, mean, 100.0 * static_cast<double>(agree) / static_cast<double>(T));
      // Sanity bounds only (quantisation noise of a random-weight model, not a tolerance).
      CHECK(mean < 0.2);
      CHECK(static_cast<double>(agree) >= 0.6 * static_cast<double>(T));
    }
  }
}
