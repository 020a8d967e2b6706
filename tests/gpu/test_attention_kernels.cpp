// GPU tests of the attention-side kernels (lib/cuda/attention_kernels.cu, declared in
// lib/cuda/kernels.hpp) against their CPU twins: ring_store, kv_fp8_simulate and
// compressor_add_ape bit for bit; compressor_close against dsv4::cpu::compressor_append itself;
// indexer_select against dsv4::cpu::indexer_select itself (plus a transcription of its scores);
// sparse_attention against a transcription of attention.cpp's inner loop (the CPU function needs a
// whole layer). Fresh random inputs every run (seed printed on failure), odd sizes, chunks starting
// at p0 > 0 with rings holding earlier rows, outputs poisoned with NaN (0xFF bytes) before each
// launch, both numerics.
//
// Tolerances. The kernels accumulate in f32 where the CPU twin accumulates in double, so in
// reference numerics each result is bounded per element by a first-order f32 error bound built
// from the sums of |terms| of its computation (u = 2^-24; a sum of n terms in f32 errs by at most
// about n·u·Σ|terms|), stated at each check. In official numerics the results are bf16 / FP8 / FP4
// values: the f32-vs-double difference only matters where a value sits within that error of a
// rounding boundary, where the two sides may land one step of the output grid apart (one bf16
// ulp ≤ 2^-7 relative; one e4m3 / e2m1 step, with the block scale possibly one power of two
// apart). Official checks allow that one step per element, require most elements bit-identical
// and report the identical fraction.
#ifndef DSV4_SOURCE_DIR
#define DSV4_SOURCE_DIR ""
#endif
#ifndef DSV4_SHARED_DIR
#define DSV4_SHARED_DIR ""
#endif
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <numeric>
#include <random>
#include <vector>

#include "catch.hpp"
#include "cuda/kernels.hpp"
#include "dsv4/cpu/ops.hpp"
#include "dsv4/dtypes.hpp"
#include "dsv4/numerics.hpp"

namespace {

namespace dc = dsv4::cuda;
namespace cpu = dsv4::cpu;
using dsv4::round_bf16;

constexpr double kU = 0x1p-24;  // f32 unit roundoff

struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t n) { REQUIRE(cudaMalloc(&p, n ? n : 16) == cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p); }
};
template <class T>
void upload(const DevBuf& d, const std::vector<T>& h) {
  REQUIRE(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
}
template <class T>
std::vector<T> download(const DevBuf& d, size_t n) {
  std::vector<T> h(n);
  REQUIRE(cudaMemcpy(h.data(), d.p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}
void poison(const DevBuf& d, size_t bytes) { REQUIRE(cudaMemset(d.p, 0xff, bytes) == cudaSuccess); }
void sync_ok() { REQUIRE(cudaDeviceSynchronize() == cudaSuccess); }

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
bool is_poison(float f) { return bits(f) == 0xffffffffu; }

std::vector<float> randn(std::mt19937_64& rng, size_t n, double scale, bool bf16 = false) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = static_cast<float>(nd(rng) * scale);
    if (x == 0.0f) x = 1e-3f;  // never zeros (unless a test makes them on purpose)
    if (bf16) x = round_bf16(x);
  }
  return v;
}

// An f32 Linear with its dense rows filled (the CPU backend reads `dense` when present).
cpu::Linear dense_linear(std::mt19937_64& rng, int64_t out, int64_t in, double scale) {
  cpu::Linear l;
  l.name = "test";
  l.out = out;
  l.in = in;
  l.format = cpu::Linear::Format::f32;
  l.dense = randn(rng, static_cast<size_t>(out * in), scale);
  return l;
}

cpu::RopeTable make_rope(int rd) {
  cpu::RopeTable t;
  for (int i = 0; i < rd / 2; ++i) t.inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * i / rd)));
  return t;
}

// Agreement of got vs want within tol per element; identical = same bits.
struct Agree {
  int64_t n = 0, identical = 0, bad = 0, nonfinite = 0;
  double worst = 0;  // max |err| / tol
  void add(float got, double want, double tol, bool same_bits) {
    ++n;
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    identical += same_bits;
    const double err = std::fabs(static_cast<double>(got) - want);
    const double r = tol > 0 ? err / tol : (err == 0 ? 0.0 : INFINITY);
    worst = std::max(worst, r);
    bad += r > 1.0;
  }
  double identical_fraction() const { return n ? static_cast<double>(identical) / static_cast<double>(n) : 1.0; }
};

}  // namespace

// ============================ ring_store / kv_fp8_simulate / compressor_add_ape ================

TEST_CASE("ring_store keeps the last rows at their position slots", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case { int64_t S, width, p0, ring; };
  for (const Case c : {Case{1, 7, 5, 16}, Case{3, 33, 0, 16}, Case{37, 64, 21, 16}, Case{37, 5, 100, 40},
                       Case{16, 3, 3, 16}}) {
    CAPTURE(c.S, c.width, c.p0, c.ring);
    const auto src = randn(rng, static_cast<size_t>(c.S * c.width), 1.0);
    auto ring = randn(rng, static_cast<size_t>(c.ring * c.width), 1.0);
    DevBuf ds(src.size() * 4), dr(ring.size() * 4);
    upload(ds, src);
    upload(dr, ring);
    REQUIRE(dc::ring_store(ds.as<float>(), c.S, c.width, c.p0, dr.as<float>(), c.ring, nullptr) == cudaSuccess);
    sync_ok();
    for (int64_t s = std::max<int64_t>(0, c.S - c.ring); s < c.S; ++s)
      std::copy_n(src.begin() + s * c.width, c.width, ring.begin() + ((c.p0 + s) % c.ring) * c.width);
    const auto got = download<float>(dr, ring.size());
    CHECK(std::memcmp(got.data(), ring.data(), ring.size() * 4) == 0);  // untouched slots kept too
  }
}

TEST_CASE("kv_fp8_simulate matches fp8_simulate_bf16 bit for bit", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> ex(-24, 10), pick(0, 9);
  for (int64_t rows : {1, 3, 37})
    for (int64_t n : {5, 56, 448, 130}) {
      const int64_t stride = n + 3;
      CAPTURE(rows, n);
      // Per-row magnitudes from 2^-24 (below the 1e-4 amax floor: subnormal e4m3 codes) to 2^10,
      // occasional outliers so the blocks of a row get different scales.
      std::vector<float> x(static_cast<size_t>(rows * stride));
      std::normal_distribution<float> nd(0.f, 1.f);
      for (int64_t r = 0; r < rows; ++r) {
        const float mag = std::ldexp(1.f, ex(rng));
        for (int64_t i = 0; i < stride; ++i) {
          float v = nd(rng) * mag * (pick(rng) == 0 ? 30.f : 1.f);
          x[r * stride + i] = round_bf16(v == 0.f ? mag : v);
        }
      }
      DevBuf dx(x.size() * 4);
      upload(dx, x);
      REQUIRE(dc::kv_fp8_simulate(dx.as<float>(), rows, stride, n, nullptr) == cudaSuccess);
      sync_ok();
      std::vector<float> want = x;
      for (int64_t r = 0; r < rows; ++r) dsv4::fp8_simulate_bf16(want.data() + r * stride, n);
      const auto got = download<float>(dx, x.size());
      int64_t diff = 0;
      for (size_t i = 0; i < x.size(); ++i) diff += bits(got[i]) != bits(want[i]);
      CHECK(diff == 0);  // same dtypes.hpp functions, same formula: exact (columns ≥ n untouched)
    }
}

TEST_CASE("compressor_add_ape adds the position's ape row", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case { int64_t S, width, p0; int ratio; };
  for (const Case c : {Case{1, 64, 7, 4}, Case{3, 32, 0, 4}, Case{37, 65, 13, 16}, Case{37, 8, 300, 128}}) {
    CAPTURE(c.S, c.width, c.p0, c.ratio);
    const auto g = randn(rng, static_cast<size_t>(c.S * c.width), 1.0);
    const auto ape = randn(rng, static_cast<size_t>(c.ratio * c.width), 1.0);
    DevBuf dg(g.size() * 4), da(ape.size() * 4);
    upload(dg, g);
    upload(da, ape);
    REQUIRE(dc::compressor_add_ape(dg.as<float>(), da.as<float>(), c.S, c.width, c.p0, c.ratio, nullptr) ==
            cudaSuccess);
    sync_ok();
    const auto got = download<float>(dg, g.size());
    int64_t diff = 0;
    for (int64_t s = 0; s < c.S; ++s)
      for (int64_t e = 0; e < c.width; ++e)
        diff += bits(got[s * c.width + e]) != bits(g[s * c.width + e] + ape[((c.p0 + s) % c.ratio) * c.width + e]);
    CHECK(diff == 0);  // one f32 add: exact
  }
}

// ============================ compressor_close =================================================

namespace {

struct CompCfg {
  int ratio, d;
  bool overlap;
  int rope;
  bool indexer;
};

// Reference numerics: a first-order bound of the f32 kernel's error per entry value, from a
// transcription of compressor.cpp's close (in double). Per feature the softmax weights carry
// relative errors of expf (≤ 2 ulp), of the f32 l − max (u·|l − max|) and the sums over the
// span rows add span·u of Σ w|v|: |Δpooled| ≤ P = (2(L + 4) + 2·span + 2)·u·V, V = Σ w|v| / Σ w.
// The norm: the f32 sum of squares errs by ≤ d·u·ss plus 2Σ|x|P from the pooled errors, so
// Δr/r ≤ Δss/(2ss) + 2u and Δy ≤ |w|·r·P + |y|·(Δr/r + 2u). RoPE mixes a pair: Δz ≤ Δy0 + Δy1 +
// 3u(|y0| + |y1|). The bound is doubled for the second-order terms it drops.
std::vector<double> compressor_bounds(const CompCfg& c, const std::vector<float>& kv_all,
                                      const std::vector<float>& g_all, const std::vector<float>& norm,
                                      int64_t p, double eps) {
  const int m = c.ratio, d = c.d, span = c.overlap ? 2 * m : m;
  const int64_t width = c.overlap ? 2 * d : d, first = p + 1 - span;
  const int s0 = first < 0 ? static_cast<int>(-first) : 0;
  std::vector<double> x(d), P(d), y(d), dy(d);
  for (int e = 0; e < d; ++e) {
    double mx = -INFINITY;
    for (int s = s0; s < span; ++s) {
      const int64_t col = c.overlap && s >= m ? d + e : e;
      mx = std::max(mx, static_cast<double>(g_all[(first + s) * width + col]));
    }
    double den = 0, num = 0, numabs = 0, L = 0;
    for (int s = s0; s < span; ++s) {
      const int64_t col = c.overlap && s >= m ? d + e : e;
      const double l = g_all[(first + s) * width + col], v = kv_all[(first + s) * width + col];
      const double w = std::exp(l - mx);
      den += w;
      num += w * v;
      numabs += w * std::fabs(v);
      L = std::max(L, mx - l);
    }
    x[e] = num / den;
    P[e] = (2 * (L + 4) + 2 * span + 2) * kU * numabs / den;
  }
  double ss = 0, sxp = 0;
  for (int e = 0; e < d; ++e) {
    ss += x[e] * x[e];
    sxp += std::fabs(x[e]) * P[e];
  }
  const double r = 1.0 / std::sqrt(ss / d + eps);
  const double dr = (d * kU * ss + 2 * sxp) / (2 * ss) + 2 * kU;
  for (int e = 0; e < d; ++e) {
    y[e] = norm[e] * x[e] * r;
    dy[e] = std::fabs(norm[e]) * r * P[e] + std::fabs(y[e]) * (dr + 2 * kU);
  }
  std::vector<double> tol = dy;
  for (int i = 0; i < c.rope / 2; ++i) {
    const int j = d - c.rope + 2 * i;
    const double t = dy[j] + dy[j + 1] + 3 * kU * (std::fabs(y[j]) + std::fabs(y[j + 1]));
    tol[j] = tol[j + 1] = t;
  }
  for (auto& t : tol) t = 2 * t + 1e-30;
  return tol;
}

// Official numerics: one step of the entry's last grid at the larger of the two values (see the
// file comment): FP4 (indexer: max(s, |v|/2) with s the block scale, one e2m1 step even if the
// scale doubled), FP8 (main non-rope dims: max(|v|·2^-3, 2s·2^-9)), bf16 (main rope dims: 2^-7|v|).
std::vector<double> official_steps(const CompCfg& c, const float* want, const float* got) {
  std::vector<double> tol(c.d);
  auto block_scale = [&](int i0, int n, bool fp4) {
    float amax = 0;
    for (int i = i0; i < i0 + n; ++i) amax = std::max({amax, std::fabs(want[i]), std::fabs(got[i])});
    return static_cast<double>(
        dsv4::e8m0_to_f32(fp4 ? dsv4::fp4_act_scale_e8m0(amax) : dsv4::fp8_act_scale_e8m0(amax)));
  };
  const int nq = c.indexer ? c.d : c.d - c.rope, block = c.indexer ? 32 : 64;
  for (int i0 = 0; i0 < nq; i0 += block) {
    const int n = std::min(block, nq - i0);
    const double s = block_scale(i0, n, c.indexer);
    for (int i = i0; i < i0 + n; ++i) {
      const double v = std::max(std::fabs(want[i]), std::fabs(got[i]));
      // FP8: one e4m3 step each way (an input at a binade boundary rounds down on one side and up on
      // the other: 1 − 2^-4 vs 1 + 2^-3 of it), i.e. ≤ 2^-2 of the value; the subnormal grid 2^-9·s.
      tol[i] = c.indexer ? std::max(s, v / 2) : std::max(v * 0x1p-2, 2 * s * 0x1p-9);
    }
  }
  for (int i = nq; i < c.d; ++i) tol[i] = 0x1p-7 * std::max(std::fabs(want[i]), std::fabs(got[i]));
  for (auto& t : tol) t = t * 1.001 + 1e-30;
  return tol;
}

void run_compressor_case(std::mt19937_64& rng, const CompCfg& c, int64_t p0, int64_t S, bool official, Agree& st) {
  CAPTURE(c.ratio, c.d, c.overlap, c.rope, c.indexer, p0, S, official);
  const int D = 24, m = c.ratio, d = c.d, span = c.overlap ? 2 * m : m;
  const int64_t width = c.overlap ? 2 * d : d, ring = span + 3;  // 3 rollback rows
  cpu::CompressorWeights w;
  w.wkv = dense_linear(rng, width, D, 1.0 / std::sqrt(D));
  w.wgate = dense_linear(rng, width, D, 2.0 / std::sqrt(D));  // gate logits ~ N(0, 4): uneven softmax
  w.ape = randn(rng, static_cast<size_t>(m * width), 0.5);
  w.norm = randn(rng, static_cast<size_t>(d), 0.3);
  for (auto& v : w.norm) v = round_bf16(1.0f + v);
  const cpu::RopeTable rope = make_rope(c.rope);
  const dsv4::CompressorShape shape{m, d, span, static_cast<int>(width), static_cast<int>(ring)};
  const float eps = 1e-6f;  // the device's f32 eps, widened, for the host's double eps
  const cpu::CompressorParams cp{shape, &w, &rope, c.rope, static_cast<double>(eps), official, c.indexer};
  const auto x = randn(rng, static_cast<size_t>((p0 + S) * D), 1.0);

  cpu::ThreadPool pool(1);
  cpu::CompressorState cs;
  cs.kv.assign(static_cast<size_t>(ring * width), 0.0f);
  cs.gate.assign(static_cast<size_t>(ring * width), 0.0f);
  std::vector<float> entries;
  if (p0 > 0) cpu::compressor_append(cp, cs, x.data(), p0, 0, entries, pool);
  const cpu::CompressorState before = cs;  // the rings the GPU chunk starts from
  cpu::compressor_append(cp, cs, x.data() + p0 * D, S, p0, entries, pool);
  const int64_t n_ent = (p0 + S) / m, e0 = p0 / m;
  REQUIRE(static_cast<int64_t>(entries.size()) == n_ent * d);

  // Raw rows exactly as compressor_append computes them (same linear, row by row).
  std::vector<float> kv_all(static_cast<size_t>((p0 + S) * width)), g_all(kv_all.size());
  cpu::linear(w.wkv, x.data(), p0 + S, kv_all.data(), pool);
  cpu::linear(w.wgate, x.data(), p0 + S, g_all.data(), pool);
  std::vector<float> kv(kv_all.begin() + p0 * width, kv_all.end()), g(g_all.begin() + p0 * width, g_all.end());
  for (int64_t t = 0; t < p0 + S; ++t)
    for (int64_t e = 0; e < width; ++e) g_all[t * width + e] += w.ape[(t % m) * width + e];

  DevBuf dkv(kv.size() * 4), dg(g.size() * 4), dape(w.ape.size() * 4), drk(before.kv.size() * 4),
      drg(before.gate.size() * 4), dnorm(w.norm.size() * 4), dinv(std::max<size_t>(1, rope.inv_freq.size()) * 4),
      dent(static_cast<size_t>(std::max<int64_t>(n_ent, 1) * d) * 4);
  upload(dkv, kv);
  upload(dg, g);
  upload(dape, w.ape);
  upload(drk, before.kv);
  upload(drg, before.gate);
  upload(dnorm, w.norm);
  if (!rope.inv_freq.empty()) upload(dinv, rope.inv_freq);
  REQUIRE(dc::compressor_add_ape(dg.as<float>(), dape.as<float>(), S, width, p0, m, nullptr) == cudaSuccess);
  poison(dent, static_cast<size_t>(std::max<int64_t>(n_ent, 1) * d) * 4);
  dc::CompressorArgs a;
  a.kv = dkv.as<float>();
  a.gate = dg.as<float>();
  a.ring_kv = drk.as<float>();
  a.ring_gate = drg.as<float>();
  a.ring = ring;
  a.ratio = m;
  a.d = d;
  a.width = width;
  a.norm = dnorm.as<float>();
  a.norm_eps = eps;
  a.inv_freq = dinv.as<float>();
  a.rope_dim = c.rope;
  a.official = official;
  a.indexer = c.indexer;
  a.p0 = p0;
  a.S = S;
  a.entries = dent.as<float>();
  REQUIRE(dc::compressor_close(a, nullptr) == cudaSuccess);
  sync_ok();
  const auto got = download<float>(dent, static_cast<size_t>(n_ent * d));
  int64_t stray = 0;  // entries of earlier chunks are not rewritten
  for (int64_t i = 0; i < e0 * d; ++i) stray += !is_poison(got[i]);
  CHECK(stray == 0);
  for (int64_t e = e0; e < n_ent; ++e) {
    const float* want = entries.data() + e * d;
    const float* gp = got.data() + e * d;
    const std::vector<double> tol =
        official ? official_steps(c, want, gp)
                 : compressor_bounds(c, kv_all, g_all, w.norm, (e + 1) * m - 1, static_cast<double>(eps));
    for (int i = 0; i < d; ++i) st.add(gp[i], want[i], tol[i], bits(gp[i]) == bits(want[i]));
  }
}

}  // namespace

TEST_CASE("compressor_close matches compressor_append", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const CompCfg cfgs[] = {
      {4, 32, true, 8, true},       // tiny CSA indexer compressor
      {4, 64, true, 8, false},      // tiny CSA main compressor
      {16, 64, false, 8, false},    // tiny HCA
      {4, 128, true, 64, true},     // real indexer compressor (128 dims, rope 64)
      {4, 512, true, 64, false},    // real CSA main compressor
      {128, 512, false, 64, false}, // real HCA
  };
  struct Sched { int64_t p0, S; };
  for (const CompCfg& c : cfgs)
    for (bool official : {false, true}) {
      Agree st;
      const std::vector<Sched> scheds =
          c.ratio == 128 ? std::vector<Sched>{{0, 130}, {200, 57}, {255, 1}, {127, 3}}
                         : std::vector<Sched>{{0, 1}, {0, 37}, {3, 1}, {13, 3}, {21, 37}, {37, 37}, {63, 1}};
      for (const Sched& sc : scheds) run_compressor_case(rng, c, sc.p0, sc.S, official, st);
      INFO("ratio " << c.ratio << " d " << c.d << " indexer " << c.indexer << " official " << official << ": "
                    << st.n << " values, worst |err|/tol " << st.worst << ", bit-identical "
                    << st.identical_fraction());
      std::printf("compressor_close ratio=%d d=%d indexer=%d official=%d: worst |err|/tol %.3g, identical %.4f\n",
                  c.ratio, c.d, c.indexer, official, st.worst, st.identical_fraction());
      CHECK(st.nonfinite == 0);
      CHECK(st.bad == 0);
      // Official: only values at a rounding boundary may differ (see the file comment).
      if (official) CHECK(st.identical_fraction() >= 0.9);
    }
}

// ============================ indexer_select ===================================================

namespace {

enum class KeyMode { distinct, ties };

// Host top-k of a score row: by score descending, ties to the lowest id; ascending ids out.
std::vector<int32_t> host_topk(const std::vector<double>& score, int k) {
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

struct IdxStats {
  int64_t queries = 0, scored = 0, keys = 0, identical = 0, bad_score = 0, set_diffs = 0, bad_diffs = 0;
  double worst = 0;
};

void run_indexer_case(std::mt19937_64& rng, int heads, int hd, int rd, int topk, int64_t p0, int64_t S,
                      int64_t nkeys, KeyMode mode, bool official, IdxStats& st) {
  CAPTURE(heads, hd, rd, topk, p0, S, nkeys, static_cast<int>(mode), official);
  const int D = 16, qlr = 24;
  cpu::AttnWeights aw;
  aw.idx_wq_b = dense_linear(rng, int64_t{heads} * hd, qlr, 1.0 / std::sqrt(qlr));
  aw.idx_weights_proj = dense_linear(rng, heads, D, 1.0 / std::sqrt(D));
  // Ties: positive head weights (positive weights_proj rows and inputs), so every key whose heads
  // all see q·k ≤ 0 scores exactly 0 (zero keys always do), plus duplicated keys: many exact
  // ties, also at the top-k boundary.
  auto x = randn(rng, static_cast<size_t>(S * D), 1.0);
  if (mode == KeyMode::ties) {
    for (auto& v : aw.idx_weights_proj.dense) v = std::fabs(v);
    for (auto& v : x) v = std::fabs(v);
  }
  const auto qr = randn(rng, static_cast<size_t>(S * qlr), 1.0);
  // Keys on the FP4 grid (as the indexer compressor emits them), so that with the FP4 query of
  // official numerics every q·k is exact in f32 as in double (products of e2m1 values times
  // power-of-two scales, a few bits each, summed over ≤ 256 dims: far below 24 bits) and the
  // official scores must agree bit for bit.
  std::vector<float> keys(static_cast<size_t>(nkeys * hd));
  std::uniform_int_distribution<int> pct(0, 99);
  for (int64_t k = 0; k < nkeys; ++k) {
    float* kr = keys.data() + k * hd;
    const int r = pct(rng);
    if (mode == KeyMode::ties && r < 35) {
      std::fill(kr, kr + hd, 0.0f);
    } else if (mode == KeyMode::ties && r < 65 && k > 0) {
      std::uniform_int_distribution<int64_t> pick(0, k - 1);
      std::copy_n(keys.data() + pick(rng) * hd, hd, kr);
    } else {
      const auto v = randn(rng, static_cast<size_t>(hd), 1.0, true);
      std::copy(v.begin(), v.end(), kr);
      dsv4::fp4_simulate_bf16(kr, hd);
    }
  }
  const cpu::RopeTable rope = make_rope(rd);
  cpu::ThreadPool pool(1);
  cpu::IndexerParams ip;
  ip.w = &aw;
  ip.rope = &rope;
  ip.heads = heads;
  ip.head_dim = hd;
  ip.rope_dim = rd;
  ip.topk = topk;
  ip.official = official;
  const auto cpu_sel = cpu::indexer_select(ip, keys, x.data(), qr.data(), S, p0, pool);

  // The GPU's inputs, as indexer_select computes them (same linears).
  std::vector<float> q(static_cast<size_t>(S * heads * hd)), wts(static_cast<size_t>(S * heads));
  cpu::linear(aw.idx_wq_b, qr.data(), S, q.data(), pool, official ? cpu::LinearOut::fp8_bf16 : cpu::LinearOut::f32);
  cpu::linear(aw.idx_weights_proj, x.data(), S, wts.data(), pool,
              official ? cpu::LinearOut::bf16 : cpu::LinearOut::f32);

  DevBuf dq(q.size() * 4), dw(wts.size() * 4), dk(std::max<size_t>(keys.size(), 1) * 4),
      dinv(std::max<size_t>(rope.inv_freq.size(), 1) * 4), dsel(static_cast<size_t>(S * topk) * 4),
      dn(static_cast<size_t>(S) * 4);
  const int64_t scratch_floats = dc::indexer_scratch_floats(S, nkeys);
  REQUIRE(scratch_floats >= S * nkeys);  // S ≤ 1024 here: one row per query
  DevBuf dscr(static_cast<size_t>(scratch_floats) * 4);
  upload(dq, q);
  upload(dw, wts);
  if (!keys.empty()) upload(dk, keys);
  upload(dinv, rope.inv_freq);
  poison(dsel, static_cast<size_t>(S * topk) * 4);
  poison(dn, static_cast<size_t>(S) * 4);
  poison(dscr, static_cast<size_t>(scratch_floats) * 4);
  dc::IndexerArgs a;
  a.q = dq.as<float>();
  a.w = dw.as<float>();
  a.keys = dk.as<float>();
  a.nkeys = nkeys;
  a.heads = heads;
  a.head_dim = hd;
  a.rope_dim = rd;
  a.topk = topk;
  a.inv_freq = dinv.as<float>();
  a.official = official;
  a.p0 = p0;
  a.S = S;
  a.sel = dsel.as<int32_t>();
  a.n_sel = dn.as<int32_t>();
  a.scratch = dscr.as<float>();
  REQUIRE(dc::indexer_select(a, nullptr) == cudaSuccess);
  sync_ok();
  const auto gsel = download<int32_t>(dsel, static_cast<size_t>(S * topk));
  const auto gn = download<int32_t>(dn, static_cast<size_t>(S));
  const auto gscr = download<float>(dscr, static_cast<size_t>(S * nkeys));
  const auto gq = download<float>(dq, q.size());

  const double wscale = 1.0 / std::sqrt(static_cast<double>(hd)) / std::sqrt(static_cast<double>(heads));
  for (int64_t s = 0; s < S; ++s) {
    CAPTURE(s);
    ++st.queries;
    const int64_t p = p0 + s, count = std::min<int64_t>((p + 1) / 4, nkeys);
    const auto& want = cpu_sel[static_cast<size_t>(s)];
    REQUIRE(gn[s] == static_cast<int32_t>(want.size()));
    std::vector<int32_t> got(gsel.begin() + s * topk, gsel.begin() + s * topk + gn[s]);
    if (count <= topk) {
      CHECK(got == want);  // iota
      continue;
    }
    ++st.scored;
    // The query transform, with the functions the CPU indexer uses.
    std::vector<float> qs(q.begin() + s * heads * hd, q.begin() + (s + 1) * heads * hd);
    for (int h = 0; h < heads; ++h) {
      rope.apply(qs.data() + h * hd + hd - rd, p, false, official);
      if (official) {
        dsv4::hadamard_bf16(qs.data() + h * hd, hd);
        dsv4::fp4_simulate_bf16(qs.data() + h * hd, hd);
      }
    }
    // In place q: official bit-identical (same RoPE arithmetic, bf16, then exact Hadamard / FP4
    // steps); reference within 2^-22 of the pair's magnitude (cos / sin in double on both sides,
    // at most the last f32 bit apart).
    int64_t qbad = 0;
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd; ++i) {
        const int64_t j = h * hd + i;
        const float g = gq[s * heads * hd + j], w = qs[j];
        const int pair0 = h * hd + ((i - (hd - rd)) & ~1) + (hd - rd);
        const double tol = official || i < hd - rd ? 0.0 : 0x1p-22 * (std::fabs(qs[pair0]) + std::fabs(qs[pair0 + 1]));
        qbad += !(std::fabs(static_cast<double>(g) - w) <= tol);
      }
    CHECK(qbad == 0);

    // Scores: the transcription of indexer.cpp (double), with a bound of the f32 kernel's error in
    // reference numerics: per head the warp's dot (lane sums of ⌈hd/32⌉ FMAs, a 5-level tree)
    // errs by ≤ (hd/32 + 6)·u·Σ|q·k| (+2u for the query's RoPE), the weight by u, the f32 sum over
    // the heads by heads·u·Σ|terms|; doubled for the dropped second-order terms.
    std::vector<double> cs(static_cast<size_t>(count)), tol(static_cast<size_t>(count)), gs(cs.size());
    for (int64_t k = 0; k < count; ++k) {
      const float* kr = keys.data() + k * hd;
      double acc = 0, bound = 0, absacc = 0;
      float facc = 0;
      for (int h = 0; h < heads; ++h) {
        const float* qh = qs.data() + h * hd;
        const double qk = cpu::dot(qh, kr, hd);
        double qkabs = 0;
        for (int i = 0; i < hd; ++i) qkabs += std::fabs(static_cast<double>(qh[i]) * kr[i]);
        if (official) {
          const float wI = round_bf16(wts[s * heads + h] * static_cast<float>(wscale));
          facc += round_bf16(wI * std::max(0.0f, round_bf16(static_cast<float>(qk))));
        } else {
          const double wI = static_cast<double>(wts[s * heads + h]) * wscale;
          acc += wI * std::max(0.0, qk);
          absacc += std::fabs(wI) * std::max(0.0, qk);
          bound += std::fabs(wI) * ((hd / 32.0 + 9) * kU * qkabs);
        }
      }
      cs[k] = official ? round_bf16(facc) : acc;
      tol[k] = official ? 0.0 : 2 * (bound + (heads + 2) * kU * absacc) + 1e-30;
      const float g = gscr[s * nkeys + k];
      gs[k] = g;
      ++st.keys;
      st.identical += static_cast<double>(g) == cs[k];
      const double err = std::fabs(g - cs[k]);
      if (!(err <= tol[k])) ++st.bad_score;
      if (tol[k] > 0) st.worst = std::max(st.worst, err / tol[k]);
    }
    // The radix select + compaction exactly: the GPU's selection is the host top-k of its own
    // scores (ties to the lowest id), in ascending order.
    CHECK(got == host_topk(gs, topk));
    if (official) {
      CHECK(got == want);  // identical bf16 scores (checked above) → identical sets, ties included
      continue;
    }
    // Reference: f32 vs double may swap near-ties at the boundary; every id in one set but not the
    // other must score within max(1e-5 relative, the two keys' f32 bounds) of the CPU's k-th score.
    const std::vector<int32_t> ranked = host_topk(cs, topk);
    double kth = INFINITY;
    int32_t kth_id = 0;
    for (int32_t i : ranked)
      if (cs[i] < kth) kth = cs[i], kth_id = i;
    std::vector<int32_t> diff;
    std::set_symmetric_difference(got.begin(), got.end(), want.begin(), want.end(), std::back_inserter(diff));
    st.set_diffs += static_cast<int64_t>(diff.size());
    for (int32_t i : diff) {
      const bool near = std::fabs(cs[i] - kth) <= std::max(1e-5 * std::fabs(kth), tol[i] + tol[kth_id]);
      if (!near) ++st.bad_diffs;
    }
  }
}

}  // namespace

TEST_CASE("indexer_select matches the CPU indexer", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (bool official : {false, true}) {
    IdxStats st;
    for (KeyMode mode : {KeyMode::distinct, KeyMode::ties}) {
      // Tiny model (4 heads × 32, rope 8, topk 8): decode, odd chunks, counts crossing topk inside
      // one chunk (p0 = 20: counts 5…14), fewer keys than (p+1)/4.
      run_indexer_case(rng, 4, 32, 8, 8, 0, 3, 0, mode, official, st);      // no keys at all
      run_indexer_case(rng, 4, 32, 8, 8, 0, 37, 9, mode, official, st);
      run_indexer_case(rng, 4, 32, 8, 8, 20, 37, 14, mode, official, st);
      run_indexer_case(rng, 4, 32, 8, 8, 60, 1, 15, mode, official, st);
      run_indexer_case(rng, 4, 32, 8, 8, 101, 3, 21, mode, official, st);   // nkeys < (p+1)/4
      run_indexer_case(rng, 4, 32, 8, 8, 400, 37, 109, mode, official, st);
      // topk 512 with 575 keys (the second test model).
      run_indexer_case(rng, 4, 32, 8, 512, 2296, 37, 575, mode, official, st);
      // Real indexer shape (64 heads × 128, rope 64) with several thousand keys: all four radix
      // passes resolve distinct f32 scores.
      run_indexer_case(rng, 64, 128, 64, 512, 12003, 3, 3001, mode, official, st);
    }
    INFO("official " << official << ": " << st.queries << " queries (" << st.scored << " scored), " << st.keys
                     << " scores, bit-identical fraction " << (st.keys ? double(st.identical) / st.keys : 1.0)
                     << ", worst |err|/tol " << st.worst << ", near-tie swaps " << st.set_diffs);
    std::printf("indexer_select official=%d: %lld scores, identical %.4f, worst |err|/tol %.3g, near-tie swaps %lld\n",
                official, static_cast<long long>(st.keys), st.keys ? double(st.identical) / st.keys : 1.0, st.worst,
                static_cast<long long>(st.set_diffs));
    CHECK(st.bad_score == 0);  // official: bit-identical (exact dots, same rounding sequence)
    CHECK(st.bad_diffs == 0);
  }
}

// ============================ sparse_attention =================================================

namespace {

struct AttnCfg {
  int H, hd, W, ratio, topk;
};

struct AttnStats {
  Agree a;
};

// Distance of p (> 0) to the nearest bf16 rounding midpoint, relative to p.
double bf16_midpoint_distance(double p) {
  int e = 0;
  std::frexp(p, &e);                        // p = f·2^e, f in [0.5, 1)
  const double ulp = std::ldexp(1.0, e - 8);  // bf16: 8 significant bits
  const double t = p / ulp - std::floor(p / ulp);
  return std::fabs(t - 0.5) * ulp / p;
}

void run_attention_case(std::mt19937_64& rng, const AttnCfg& c, int64_t p0, int64_t S, bool official,
                        AttnStats& st) {
  CAPTURE(c.H, c.hd, c.W, c.ratio, c.topk, p0, S, official);
  const int H = c.H, hd = c.hd;
  const int64_t Wr = c.W + 3, n_entries = c.ratio ? (p0 + S) / c.ratio : 0;
  // Inputs bf16-representable in official numerics, as the twin stores them. q·k/√hd ~ N(0, 2.25).
  const auto q = randn(rng, static_cast<size_t>(S * H * hd), 1.5, official);
  const auto kv = randn(rng, static_cast<size_t>(S * hd), 1.0, official);
  const auto window = randn(rng, static_cast<size_t>(Wr * hd), 1.0, official);
  const auto entries = randn(rng, static_cast<size_t>(std::max<int64_t>(n_entries, 1) * hd), 1.0, official);
  const auto sink = randn(rng, static_cast<size_t>(H), 2.0);
  // CSA: ascending random subsets of the visible entries, usually min(visible, topk) of them,
  // sometimes fewer; the rest of each row holds valid ids that must not be read.
  std::vector<int32_t> sel(static_cast<size_t>(std::max<int64_t>(S * c.topk, 1))), nsel(static_cast<size_t>(S));
  if (c.ratio == 4)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t vis = std::min(n_entries, (p0 + s + 1) / 4);
      int64_t n = std::min<int64_t>(vis, c.topk);
      if (n > 0 && rng() % 4 == 0) n -= static_cast<int64_t>(rng() % (n + 1));
      std::vector<int32_t> ids(static_cast<size_t>(vis));
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(static_cast<size_t>(n));
      std::sort(ids.begin(), ids.end());
      for (int64_t i = 0; i < c.topk; ++i)
        sel[s * c.topk + i] = i < n ? ids[i] : static_cast<int32_t>(n_entries ? rng() % n_entries : 0);
      nsel[s] = static_cast<int32_t>(n);
    }

  DevBuf dq(q.size() * 4), dkv(kv.size() * 4), dwin(window.size() * 4), dent(entries.size() * 4),
      dsink(sink.size() * 4), dsel(sel.size() * 4), dnsel(nsel.size() * 4), dout(q.size() * 4);
  upload(dq, q);
  upload(dkv, kv);
  upload(dwin, window);
  upload(dent, entries);
  upload(dsink, sink);
  upload(dsel, sel);
  upload(dnsel, nsel);
  poison(dout, q.size() * 4);
  dc::AttentionArgs a;
  a.q = dq.as<float>();
  a.kv = dkv.as<float>();
  a.window = dwin.as<float>();
  a.window_ring = Wr;
  a.W = c.W;
  a.entries = dent.as<float>();
  a.n_entries = n_entries;
  a.ratio = c.ratio;
  a.sel = dsel.as<int32_t>();
  a.n_sel = dnsel.as<int32_t>();
  a.topk = c.topk;
  a.sink = dsink.as<float>();
  a.H = H;
  a.hd = hd;
  a.official = official;
  a.p0 = p0;
  a.S = S;
  a.o = dout.as<float>();
  REQUIRE(dc::sparse_attention(a, nullptr) == cudaSuccess);
  sync_ok();
  const auto got = download<float>(dout, q.size());

  // attention.cpp's loop (double), with the error bound of the f32 kernel in reference numerics:
  // logit errors δ ≤ (hd/32 + 6)·u·scale·Σ|q·k| (the warp's dot: lane FMA chains and a 5-level
  // tree) + u|l| (its f32 rounding); each p_j then errs relatively by E = 2δ_max + (3 + L)u (expf
  // ≤ 2 ulp, the f32 l − m, L = max(m − l)); the key-ordered f32 sums of n terms add n·u of
  // Σ|terms|, so |Δo_d| ≤ 2[(E + (n + 2)u)(A_d + |o_d|) + u|o_d|] with A_d = Σ p_j|k_jd| / den.
  // Official adds one bf16 ulp of o (2^-7 relative) and, for each p_j within E of a bf16 rounding
  // midpoint (the two sides may round it apart), 2^-7·p_j·|k_jd| / den.
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<const float*> keys;
  std::vector<double> logit, pj, acc(hd), aabs(hd), flip(hd);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t p = p0 + s;
    keys.clear();
    for (int64_t pos = std::max<int64_t>(0, p - c.W + 1); pos <= p; ++pos)
      keys.push_back(pos < p0 ? window.data() + (pos % Wr) * hd : kv.data() + (pos - p0) * hd);
    if (c.ratio == 4) {
      for (int32_t i = 0; i < nsel[s]; ++i) keys.push_back(entries.data() + sel[s * c.topk + i] * hd);
    } else if (c.ratio > 0) {
      const int64_t vis = std::min(n_entries, (p + 1) / c.ratio);
      for (int64_t i = 0; i < vis; ++i) keys.push_back(entries.data() + i * hd);
    }
    const size_t n = keys.size();
    logit.resize(n);
    pj.resize(n);
    for (int h = 0; h < H; ++h) {
      const float* qh = q.data() + (s * H + h) * hd;
      double mx = official && n ? -INFINITY : static_cast<double>(sink[h]);
      double dmax = 0;
      for (size_t j = 0; j < n; ++j) {
        const double l = cpu::dot(qh, keys[j], hd) * scale;
        logit[j] = official ? static_cast<double>(static_cast<float>(l)) : l;
        mx = std::max(mx, logit[j]);
        double labs = 0;
        for (int i = 0; i < hd; ++i) labs += std::fabs(static_cast<double>(qh[i]) * keys[j][i]);
        dmax = std::max(dmax, (hd / 32.0 + 6) * kU * scale * labs + kU * std::fabs(l));
      }
      double L = 0;
      for (size_t j = 0; j < n; ++j) L = std::max(L, mx - logit[j]);
      const double E = 2 * dmax + (3 + L) * kU;
      double den = std::exp(sink[h] - mx);
      std::fill(acc.begin(), acc.end(), 0.0);
      std::fill(aabs.begin(), aabs.end(), 0.0);
      std::fill(flip.begin(), flip.end(), 0.0);
      for (size_t j = 0; j < n; ++j) {
        double w = std::exp(logit[j] - mx);
        den += w;
        const bool near = official && bf16_midpoint_distance(w) <= E + 4 * kU;
        const double wu = w;
        if (official) w = round_bf16(static_cast<float>(w));
        for (int d = 0; d < hd; ++d) {
          acc[d] += w * keys[j][d];
          aabs[d] += std::max(w, wu) * std::fabs(keys[j][d]);
          if (near) flip[d] += 0x1p-7 * wu * std::fabs(keys[j][d]);
        }
      }
      for (int d = 0; d < hd; ++d) {
        const float v = static_cast<float>(acc[d] / den);
        const float want = official ? round_bf16(v) : v;
        const float g = got[(s * H + h) * hd + d];
        const double o = std::fabs(acc[d] / den), A = aabs[d] / den;
        double tol = 2 * ((E + (n + 2) * kU) * (A + o) + kU * o);
        if (official) tol += 0x1p-7 * std::max(std::fabs(want), std::fabs(g)) + flip[d] / den;
        st.a.add(g, official ? static_cast<double>(want) : acc[d] / den, tol + 1e-30, bits(g) == bits(want));
      }
    }
  }
}

}  // namespace

TEST_CASE("sparse_attention matches the attention loop of the CPU twin", "[gpu][attention]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Sched { int64_t p0, S; };
  const std::vector<Sched> tiny = {{0, 1}, {0, 37}, {5, 3}, {40, 37}, {99, 1}, {200, 3}};
  for (bool official : {false, true}) {
    AttnStats st;
    // Tiny model (H 4, hd 64, W 16): sliding, CSA (topk 8), HCA (ratio 16).
    for (const AttnCfg c : {AttnCfg{4, 64, 16, 0, 0}, AttnCfg{4, 64, 16, 4, 8}, AttnCfg{4, 64, 16, 16, 0}})
      for (const Sched& sc : tiny) run_attention_case(rng, c, sc.p0, sc.S, official, st);
    // Real head shape (hd 512, W 128): CSA with topk 512 (640 keys), HCA ratio 128, sliding.
    run_attention_case(rng, AttnCfg{3, 512, 128, 4, 512}, 3001, 3, official, st);
    run_attention_case(rng, AttnCfg{2, 512, 128, 128, 0}, 5000, 37, official, st);
    run_attention_case(rng, AttnCfg{2, 512, 128, 0, 0}, 77, 5, official, st);
    INFO("official " << official << ": " << st.a.n << " values, worst |err|/tol " << st.a.worst
                     << ", bit-identical " << st.a.identical_fraction());
    std::printf("sparse_attention official=%d: %lld values, worst |err|/tol %.3g, identical %.4f\n", official,
                static_cast<long long>(st.a.n), st.a.worst, st.a.identical_fraction());
    CHECK(st.a.nonfinite == 0);
    CHECK(st.a.bad == 0);
    if (official) CHECK(st.a.identical_fraction() >= 0.9);
  }
}

// ============================ argument checks ==================================================

TEST_CASE("attention launchers reject bad arguments", "[gpu][attention]") {
  DevBuf b(1 << 16);
  float* f = b.as<float>();
  int32_t* i32 = b.as<int32_t>();
  const float* cf = f;
  // S == 0 is a no-op, even without buffers.
  CHECK(dc::ring_store(nullptr, 0, 4, 0, nullptr, 16, nullptr) == cudaSuccess);
  CHECK(dc::ring_store(cf, 1, 0, 0, f, 16, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::ring_store(cf, 1, 4, 0, f, 0, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::ring_store(nullptr, 1, 4, 0, f, 16, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::kv_fp8_simulate(f, 2, 8, 16, nullptr) == cudaErrorInvalidValue);  // stride < n
  CHECK(dc::kv_fp8_simulate(nullptr, 0, 8, 8, nullptr) == cudaSuccess);
  CHECK(dc::compressor_add_ape(f, cf, 1, 4, 0, 0, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::compressor_add_ape(f, nullptr, 1, 4, 0, 4, nullptr) == cudaErrorInvalidValue);

  dc::CompressorArgs c;
  c.kv = c.gate = c.ring_kv = c.ring_gate = cf;
  c.ring = 11;
  c.ratio = 4;
  c.d = 32;
  c.width = 64;
  c.norm = cf;
  c.inv_freq = cf;
  c.rope_dim = 8;
  c.entries = f;
  c.p0 = 4;
  c.S = 0;
  CHECK(dc::compressor_close(c, nullptr) == cudaSuccess);
  c.S = 4;
  dc::CompressorArgs bad = c;
  bad.width = 48;
  CHECK(dc::compressor_close(bad, nullptr) == cudaErrorInvalidValue);
  bad = c;
  bad.rope_dim = 7;
  CHECK(dc::compressor_close(bad, nullptr) == cudaErrorInvalidValue);
  bad = c;
  bad.d = 24;
  bad.width = 48;
  bad.official = bad.indexer = true;  // Hadamard needs a power of two
  CHECK(dc::compressor_close(bad, nullptr) == cudaErrorInvalidValue);
  bad = c;
  bad.ring = 3;  // a CSA close reads up to 7 earlier rows
  CHECK(dc::compressor_close(bad, nullptr) == cudaErrorInvalidValue);
  bad = c;
  bad.entries = nullptr;
  CHECK(dc::compressor_close(bad, nullptr) == cudaErrorInvalidValue);

  dc::IndexerArgs ia;
  ia.q = f;
  ia.w = cf;
  ia.keys = cf;
  ia.nkeys = 20;
  ia.heads = 4;
  ia.head_dim = 32;
  ia.rope_dim = 8;
  ia.topk = 8;
  ia.inv_freq = cf;
  ia.p0 = 40;
  ia.S = 0;
  ia.sel = i32;
  ia.n_sel = i32;
  ia.scratch = f;
  CHECK(dc::indexer_select(ia, nullptr) == cudaSuccess);
  ia.S = 1;
  dc::IndexerArgs ib = ia;
  ib.topk = 0;
  CHECK(dc::indexer_select(ib, nullptr) == cudaErrorInvalidValue);
  ib = ia;
  ib.head_dim = 48;
  ib.official = true;
  CHECK(dc::indexer_select(ib, nullptr) == cudaErrorInvalidValue);
  ib = ia;
  ib.head_dim = 512;  // above the kernel's 256
  CHECK(dc::indexer_select(ib, nullptr) == cudaErrorInvalidValue);
  ib = ia;
  ib.scratch = nullptr;  // this query scores (10 keys > topk 8)
  CHECK(dc::indexer_select(ib, nullptr) == cudaErrorInvalidValue);
  CHECK(dc::indexer_scratch_floats(0, 100) == 0);
  CHECK(dc::indexer_scratch_floats(3, 100) == 300);

  dc::AttentionArgs aa;
  aa.q = aa.kv = aa.window = aa.entries = aa.sink = cf;
  aa.window_ring = 19;
  aa.W = 16;
  aa.n_entries = 2;
  aa.ratio = 4;
  aa.sel = aa.n_sel = i32;
  aa.topk = 8;
  aa.H = 4;
  aa.hd = 64;
  aa.p0 = 8;
  aa.S = 0;
  aa.o = f;
  CHECK(dc::sparse_attention(aa, nullptr) == cudaSuccess);
  aa.S = 1;
  dc::AttentionArgs ab = aa;
  ab.hd = 2048;
  CHECK(dc::sparse_attention(ab, nullptr) == cudaErrorInvalidValue);
  ab = aa;
  ab.window_ring = 4;
  CHECK(dc::sparse_attention(ab, nullptr) == cudaErrorInvalidValue);
  ab = aa;
  ab.n_sel = nullptr;
  CHECK(dc::sparse_attention(ab, nullptr) == cudaErrorInvalidValue);
  ab = aa;
  ab.W = 0;
  CHECK(dc::sparse_attention(ab, nullptr) == cudaErrorInvalidValue);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}
