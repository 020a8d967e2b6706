// GPU tests of sparse_attention_mma (lib/cuda/attention_mma.cu): the tensor-core sparse attention
// (all heads of a token per CTA, official numerics only) against sparse_attention with no_mma = true
// (the CUDA-core kernel, itself tested against the CPU twin in test_attention_kernels.cpp), plus
// the fallback of sparse_attention for what the mma kernel does not take.
//
// Tolerance. Official inputs are bf16-representable, so every product q_i·k_i (and p_j·k_jd with
// bf16 p_j) is exact in both kernels; only the f32 summation order differs. The logits then differ
// by ≲ (hd/32 + 6)·2^-24·scale·Σ|q_i k_i| (~1e-6 relative), which can move p_j = e^{l_j − m} across a
// bf16 rounding midpoint for a rare key: its bf16 P then differs by one bf16 ulp (≤ 2^-7 p_j) and o_d
// by ≤ 2^-7 p_j |k_jd| / den. With o a convex combination of the keys this is at most one bf16 ulp
// of the largest |o| of that head's row when that key dominates, and far less otherwise. The
// denominators (f32, different order) and Σ p_j k_jd (f32, different order) differ by ~n·2^-24
// relative, which flips the final bf16 rounding of o by one ulp for a few elements. Bound per
// element: |Δo| ≤ 2 bf16 ulps of o plus 2 bf16 ulps of max_d |o[s,h,d]| (ulp = 2^-7 · |x|, a safe
// upper bound of bf16's spacing). We also require a mean |Δo| below 1/32 of a bf16 ulp of the row
// max on average and ≥ 95 % of the elements bit-identical (flips are rare events).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "catch.hpp"
#include "cuda/kernels.hpp"
#include "dsv4/dtypes.hpp"

namespace {

namespace dc = dsv4::cuda;
using dsv4::round_bf16;

struct MBuf {
  void* p = nullptr;
  explicit MBuf(size_t n) { REQUIRE(cudaMalloc(&p, n ? n : 16) == cudaSuccess); }
  ~MBuf() { cudaFree(p); }
  MBuf(const MBuf&) = delete;
  MBuf& operator=(const MBuf&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p); }
};
template <class T>
void up(const MBuf& d, const std::vector<T>& h) {
  REQUIRE(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
}
template <class T>
std::vector<T> down(const MBuf& d, size_t n) {
  std::vector<T> h(n);
  REQUIRE(cudaMemcpy(h.data(), d.p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}
uint32_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<float> rand_bf16(std::mt19937_64& rng, size_t n, double scale, bool bf16) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = static_cast<float>(nd(rng) * scale);
    if (x == 0.0f) x = 1e-3f;  // never zeros
    if (bf16) x = round_bf16(x);
  }
  return v;
}

struct MmaCase {
  int H, hd, W, ratio, topk;
  int64_t p0, S;
  bool zero_sel = false;  // CSA: some queries with n_sel = 0
};

struct Inputs {
  std::vector<float> q, kv, window, entries, sink;
  std::vector<int32_t> sel, nsel;
  int64_t Wr = 0, n_entries = 0;
};

Inputs make_inputs(std::mt19937_64& rng, const MmaCase& c, bool official) {
  Inputs in;
  const int64_t S = c.S, p0 = c.p0;
  in.Wr = c.W + 3;
  in.n_entries = c.ratio ? (p0 + S) / c.ratio : 0;
  // q·k/√hd ~ N(0, 2.25): a spread of weights (a few keys dominate, most are small).
  in.q = rand_bf16(rng, static_cast<size_t>(S * c.H * c.hd), 1.5, official);
  in.kv = rand_bf16(rng, static_cast<size_t>(S * c.hd), 1.0, official);
  in.window = rand_bf16(rng, static_cast<size_t>(in.Wr * c.hd), 1.0, official);
  in.entries = rand_bf16(rng, static_cast<size_t>(std::max<int64_t>(in.n_entries, 1) * c.hd), 1.0, official);
  in.sink = rand_bf16(rng, static_cast<size_t>(c.H), 2.0, false);
  in.sel.assign(static_cast<size_t>(std::max<int64_t>(S * c.topk, 1)), 0);
  in.nsel.assign(static_cast<size_t>(S), 0);
  if (c.ratio == 4)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t vis = std::min(in.n_entries, (p0 + s + 1) / 4);
      int64_t n = std::min<int64_t>(vis, c.topk);
      if (n > 0 && rng() % 4 == 0) n -= static_cast<int64_t>(rng() % (n + 1));  // n_sel < topk
      if (c.zero_sel && s % 3 == 1) n = 0;
      std::vector<int32_t> ids(static_cast<size_t>(vis));
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(static_cast<size_t>(n));
      std::sort(ids.begin(), ids.end());
      for (int64_t i = 0; i < c.topk; ++i)  // the tail holds valid ids that must not be read
        in.sel[s * c.topk + i] = i < n ? ids[i] : static_cast<int32_t>(in.n_entries ? rng() % in.n_entries : 0);
      in.nsel[s] = static_cast<int32_t>(n);
    }
  return in;
}

struct DevInputs {
  MBuf q, kv, win, ent, sink, sel, nsel, o_mma, o_ref;
  explicit DevInputs(const Inputs& in)
      : q(in.q.size() * 4), kv(in.kv.size() * 4), win(in.window.size() * 4), ent(in.entries.size() * 4),
        sink(in.sink.size() * 4), sel(in.sel.size() * 4), nsel(in.nsel.size() * 4), o_mma(in.q.size() * 4),
        o_ref(in.q.size() * 4) {
    up(q, in.q);
    up(kv, in.kv);
    up(win, in.window);
    up(ent, in.entries);
    up(sink, in.sink);
    up(sel, in.sel);
    up(nsel, in.nsel);
    REQUIRE(cudaMemset(o_mma.p, 0xff, in.q.size() * 4) == cudaSuccess);  // NaN poison
    REQUIRE(cudaMemset(o_ref.p, 0xff, in.q.size() * 4) == cudaSuccess);
  }
  dc::AttentionArgs args(const MmaCase& c, const Inputs& in, bool official, float* o) const {
    dc::AttentionArgs a;
    a.q = q.as<float>();
    a.kv = kv.as<float>();
    a.window = win.as<float>();
    a.window_ring = in.Wr;
    a.W = c.W;
    a.entries = ent.as<float>();
    a.n_entries = in.n_entries;
    a.ratio = c.ratio;
    a.sel = sel.as<int32_t>();
    a.n_sel = nsel.as<int32_t>();
    a.topk = c.topk;
    a.sink = sink.as<float>();
    a.H = c.H;
    a.hd = c.hd;
    a.official = official;
    a.p0 = c.p0;
    a.S = c.S;
    a.o = o;
    return a;
  }
};

struct Cmp {
  int64_t n = 0, identical = 0, bad = 0, nonfinite = 0;
  double worst = 0, sum_rel = 0;  // |Δo| / tol, Σ |Δo| / ulp(row max)
};

double ulp_bound(double x) { return 0x1p-7 * std::fabs(x); }

void compare(const std::vector<float>& got, const std::vector<float>& want, int64_t rows, int hd, Cmp& st) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * hd;
    const float* w = want.data() + r * hd;
    double rmax = 0;
    for (int d = 0; d < hd; ++d) rmax = std::max(rmax, std::fabs(static_cast<double>(w[d])));
    const double row_ulp = ulp_bound(rmax) + 1e-30;
    for (int d = 0; d < hd; ++d) {
      ++st.n;
      if (!std::isfinite(g[d])) {
        ++st.nonfinite;
        continue;
      }
      st.identical += fbits(g[d]) == fbits(w[d]);
      const double err = std::fabs(static_cast<double>(g[d]) - w[d]);
      const double tol = 2 * ulp_bound(std::max(std::fabs(g[d]), std::fabs(w[d]))) + 2 * row_ulp;
      st.worst = std::max(st.worst, err / tol);
      st.bad += err > tol;
      st.sum_rel += err / row_ulp;
    }
  }
}

void run_mma_case(std::mt19937_64& rng, const MmaCase& c, Cmp& st) {
  CAPTURE(c.H, c.hd, c.W, c.ratio, c.topk, c.p0, c.S, c.zero_sel);
  const Inputs in = make_inputs(rng, c, true);
  DevInputs d(in);
  dc::AttentionArgs am = d.args(c, in, true, d.o_mma.as<float>());
  REQUIRE(dc::sparse_attention_mma(am, nullptr) == cudaSuccess);
  dc::AttentionArgs ar = d.args(c, in, true, d.o_ref.as<float>());
  ar.no_mma = true;
  REQUIRE(dc::sparse_attention(ar, nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto got = down<float>(d.o_mma, in.q.size());
  const auto want = down<float>(d.o_ref, in.q.size());
  Cmp one;
  compare(got, want, c.S * c.H, c.hd, one);
  INFO("values " << one.n << ", worst |err|/tol " << one.worst << ", bad " << one.bad << ", nonfinite "
                 << one.nonfinite << ", identical " << static_cast<double>(one.identical) / one.n);
  CHECK(one.nonfinite == 0);  // every element written (poison is NaN) and finite
  CHECK(one.bad == 0);
  st.n += one.n;
  st.identical += one.identical;
  st.bad += one.bad;
  st.nonfinite += one.nonfinite;
  st.worst = std::max(st.worst, one.worst);
  st.sum_rel += one.sum_rel;
}

uint64_t seed_now() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

}  // namespace

TEST_CASE("sparse_attention_mma matches the CUDA-core kernel (official numerics)", "[gpu][attention][attention_mma]") {
  const uint64_t seed = seed_now();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<MmaCase> cases;
  for (const int H : {16, 64})
    for (const int hd : {128, 512}) {
      // sliding (ratio 0): p0 = 0 (chunk rows only) and p0 > 0 (ring rows)
      cases.push_back({H, hd, 128, 0, 0, 0, 37});
      cases.push_back({H, hd, 128, 0, 0, 5000, 3});
      cases.push_back({H, hd, 128, 0, 0, 777, 1});
      // CSA (ratio 4, topk 512): n_sel = topk, < topk and 0
      cases.push_back({H, hd, 128, 4, 512, 3001, 37, true});
      cases.push_back({H, hd, 128, 4, 512, 0, 300, true});
      cases.push_back({H, hd, 128, 4, 512, 4096, 1});
      // HCA (ratio 128): few entries, and > 1000 entries (many key tiles)
      cases.push_back({H, hd, 128, 128, 0, 1000, 3});
      cases.push_back({H, hd, 128, 128, 0, 140000, 1});
      cases.push_back({H, hd, 128, 128, 0, 140000, 37});
    }
  // other shapes the kernel takes: H 32 / 48, hd 64 / 256 / 320, a short window, a tiny CSA topk
  cases.push_back({32, 256, 128, 4, 512, 2500, 37});
  cases.push_back({48, 320, 64, 128, 0, 9000, 3});
  cases.push_back({32, 64, 16, 4, 8, 40, 37, true});
  cases.push_back({64, 512, 128, 0, 0, 20, 300});
  Cmp st;
  for (const MmaCase& c : cases) run_mma_case(rng, c, st);
  const double ident = static_cast<double>(st.identical) / static_cast<double>(st.n);
  const double mean = st.sum_rel / static_cast<double>(st.n);
  std::printf("sparse_attention_mma: %lld values, worst |err|/tol %.3g, mean |err| %.3g row ulps, identical %.4f\n",
              static_cast<long long>(st.n), st.worst, mean, ident);
  CHECK(st.nonfinite == 0);
  CHECK(st.bad == 0);
  CHECK(ident >= 0.95);
  CHECK(mean <= 1.0 / 32);
}

TEST_CASE("sparse_attention_mma declines what it does not take; sparse_attention falls back",
          "[gpu][attention][attention_mma]") {
  const uint64_t seed = seed_now();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Decline {
    MmaCase c;
    bool official;
  };
  const std::vector<Decline> declines = {
      {{64, 512, 128, 4, 512, 3001, 3}, false},  // reference numerics
      {{24, 128, 128, 0, 0, 100, 5}, true},      // H not a multiple of 16
      {{80, 128, 128, 0, 0, 100, 5}, true},      // H above 64
      {{16, 96, 128, 0, 0, 100, 5}, true},       // hd not a multiple of 64
      {{16, 576, 128, 128, 0, 4000, 3}, true},   // hd above 512
  };
  for (const Decline& dcl : declines) {
    const MmaCase& c = dcl.c;
    CAPTURE(c.H, c.hd, c.ratio, c.p0, c.S, dcl.official);
    const Inputs in = make_inputs(rng, c, dcl.official);
    DevInputs d(in);
    dc::AttentionArgs am = d.args(c, in, dcl.official, d.o_mma.as<float>());
    CHECK(dc::sparse_attention_mma(am, nullptr) == cudaErrorNotSupported);
    // sparse_attention (mma first) must then give exactly the result of its own kernel.
    REQUIRE(dc::sparse_attention(am, nullptr) == cudaSuccess);
    dc::AttentionArgs ar = d.args(c, in, dcl.official, d.o_ref.as<float>());
    ar.no_mma = true;
    REQUIRE(dc::sparse_attention(ar, nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto got = down<float>(d.o_mma, in.q.size());
    const auto want = down<float>(d.o_ref, in.q.size());
    int64_t nonfinite = 0, differ = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      nonfinite += !std::isfinite(got[i]);
      differ += fbits(got[i]) != fbits(want[i]);
    }
    CHECK(nonfinite == 0);
    CHECK(differ == 0);
  }
  // S = 0 is a no-op.
  dc::AttentionArgs z;
  z.official = true;
  z.H = 64;
  z.hd = 512;
  z.W = 128;
  CHECK(dc::sparse_attention_mma(z, nullptr) == cudaSuccess);
}

TEST_CASE("sparse_attention takes the mma path for official numerics at Flash shapes", "[gpu][attention][attention_mma]") {
  const uint64_t seed = seed_now();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const MmaCase c{64, 512, 128, 4, 512, 2999, 5};
  const Inputs in = make_inputs(rng, c, true);
  DevInputs d(in);
  REQUIRE(dc::sparse_attention(d.args(c, in, true, d.o_ref.as<float>()), nullptr) == cudaSuccess);
  REQUIRE(dc::sparse_attention_mma(d.args(c, in, true, d.o_mma.as<float>()), nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto a = down<float>(d.o_ref, in.q.size());
  const auto b = down<float>(d.o_mma, in.q.size());
  int64_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += fbits(a[i]) != fbits(b[i]);
  CHECK(differ == 0);  // deterministic: the same kernel both times
}
