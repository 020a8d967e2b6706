// GPU tests of the decode GEMV kernels (dsv4/cuda/gemv.hpp) against the float64 CPU reference
// (dsv4/cpu/gemv_ref.hpp): fresh random inputs every run (seed printed on failure), odd shapes,
// outputs poisoned with NaN before each launch, a second launch on the same workspace that must be
// bit-identical (counters reset, deterministic reduction). Tolerances are derived per element:
// a bf16 result is within half an ulp (<= 2^-8 relative) of the f32 value the kernel rounded, and
// that value differs from the exact one by FP8 tensor-core/f32 accumulation error, bounded here by
// 2^-10 of the sum of |terms| (observed errors are reported as a fraction of the tolerance).
#ifndef DSV4_SOURCE_DIR
#define DSV4_SOURCE_DIR ""
#endif
#ifndef DSV4_SHARED_DIR
#define DSV4_SHARED_DIR ""
#endif
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"
#include "dsv4/cpu/gemv_ref.hpp"
#include "dsv4/cuda/gemv.hpp"
#include "cuda/gemv_diag.hpp"
#include "dsv4/cuda/gemv_layout.hpp"
#include "dsv4/dtypes.hpp"

namespace {

using dsv4::bf16_to_f32;
using dsv4::e4m3_to_f32;

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

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

// Random e4m3 codes over the whole finite range (no NaN), random e8m0 scales, bf16 activations
// with a per-row magnitude and occasional outliers (so block scales differ).
std::vector<uint8_t> rand_e4m3(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    b = static_cast<uint8_t>(rng());
    if ((b & 0x7f) == 0x7f) b ^= 1;
  }
  return v;
}
std::vector<uint8_t> rand_bytes(std::mt19937_64& rng, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(d(rng));
  return v;
}
std::vector<uint16_t> rand_act(std::mt19937_64& rng, int m, int64_t k) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> ex(-4, 4), pick(0, 99);
  std::vector<uint16_t> v(static_cast<size_t>(m * k));
  for (int i = 0; i < m; ++i) {
    const float rs = std::ldexp(1.f, ex(rng));
    for (int64_t j = 0; j < k; ++j) {
      float f = nd(rng) * rs;
      if (pick(rng) == 0) f *= 40.f;  // outlier
      v[i * k + j] = dsv4::f32_to_bf16(f);
    }
  }
  return v;
}

struct ErrStat {
  double worst = 0;  // max |err| / tol
  int64_t bad = 0, nonfinite = 0;
  void add(double got, double want, double tol) {
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    const double r = std::fabs(got - want) / tol;
    worst = std::max(worst, r);
    bad += r > 1.0;
  }
};

void run_fp8_case(std::mt19937_64& rng, int64_t n, int64_t k, int m,
                  dsv4::cuda::Fp8GemvPath path = dsv4::cuda::Fp8GemvPath::kAuto) {
  const int path_id = static_cast<int>(path);
  CAPTURE(n, k, m, path_id);
  const int64_t kb = dsv4::cuda::ceil_div(k, 128), nb = dsv4::cuda::ceil_div(n, 128);
  auto w = rand_e4m3(rng, static_cast<size_t>(n * k));
  auto s = rand_bytes(rng, static_cast<size_t>(nb * kb), 118, 134);
  auto x = rand_act(rng, m, k);
  std::vector<uint8_t> wt(dsv4::cuda::fp8_tiled_bytes(n, k));
  dsv4::cuda::fp8_relayout(w.data(), n, k, wt.data());
  std::vector<double> yref(static_cast<size_t>(m * n)), yabs(yref.size());
  dsv4::cpu::fp8_linear_ref(w.data(), s.data(), n, k, x.data(), m, yref.data(), yabs.data());

  DevBuf dw(wt.size()), ds(s.size()), dx(x.size() * 2), dy(yref.size() * 2);
  upload(dw, wt);
  upload(ds, s);
  upload(dx, x);
  const size_t wsb = dsv4::cuda::sm90_fp8_gemv_workspace_bytes(n, k, m);
  REQUIRE(wsb > 0);
  DevBuf ws(wsb);
  REQUIRE(cudaMemset(ws.p, 0, wsb) == cudaSuccess);
  std::vector<uint16_t> first;
  for (int rep = 0; rep < 2; ++rep) {
    REQUIRE(cudaMemset(dy.p, 0xff, yref.size() * 2) == cudaSuccess);  // bf16 NaN poison
    REQUIRE(dsv4::cuda::sm90_fp8_gemv_path(path, dw.as<uint8_t>(), ds.as<uint8_t>(), n, k, dx.as<uint16_t>(),
                                           m, dy.as<uint16_t>(), ws.p, wsb, nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto y = download<uint16_t>(dy, yref.size());
    if (rep == 0) {
      ErrStat st;
      for (size_t i = 0; i < y.size(); ++i)
        st.add(bf16_to_f32(y[i]), yref[i], std::ldexp(std::fabs(yref[i]), -8) + std::ldexp(yabs[i], -10) + 1e-30);
      INFO("worst |err|/tol " << st.worst << ", out of tolerance " << st.bad << ", non-finite " << st.nonfinite);
      std::printf("fp8 n=%lld k=%lld m=%d path=%d: worst |err|/tol = %.3f\n", (long long)n, (long long)k, m,
                  path_id, st.worst);
      CHECK(st.nonfinite == 0);
      CHECK(st.bad == 0);
      first = y;
    } else {
      CHECK(std::memcmp(first.data(), y.data(), y.size() * 2) == 0);  // deterministic, counters reset
    }
  }
}

}  // namespace

TEST_CASE("sm90_fp8_gemv matches the float64 reference", "[gpu][gemv]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t shapes[][2] = {{300, 520}, {1000, 136}, {33000, 136}, {1024, 4096}, {4096, 1000}, {130, 8}};
  // Both kernels at every shape (kAuto is one of them), so each path is tested whatever the heuristic.
  for (auto path : {dsv4::cuda::Fp8GemvPath::kStream, dsv4::cuda::Fp8GemvPath::kDirect,
                    dsv4::cuda::Fp8GemvPath::kRing})
    for (const auto& sh : shapes)
      for (int m : {1, 2, 3, 7, 16}) run_fp8_case(rng, sh[0], sh[1], m, path);
  // The launch-time choice itself, at a big-K shape (direct needs m*k bytes of smem) and a wide one.
  for (int m : {1, 16}) run_fp8_case(rng, 256, 8200, m);
}

TEST_CASE("sm90_fp8_gemv rejects bad arguments", "[gpu][gemv]") {
  DevBuf b(1 << 20);
  auto* u8 = b.as<uint8_t>();
  auto* u16 = b.as<uint16_t>();
  CHECK(dsv4::cuda::sm90_fp8_gemv(u8, u8, 128, 128, u16, 0, u16, b.p, 1 << 20, nullptr) == cudaErrorInvalidValue);
  CHECK(dsv4::cuda::sm90_fp8_gemv(u8, u8, 128, 128, u16, 17, u16, b.p, 1 << 20, nullptr) == cudaErrorInvalidValue);
  CHECK(dsv4::cuda::sm90_fp8_gemv(u8, u8, 128, 100, u16, 1, u16, b.p, 1 << 20, nullptr) == cudaErrorInvalidValue);
  CHECK(dsv4::cuda::sm90_fp8_gemv(nullptr, u8, 128, 128, u16, 1, u16, b.p, 1 << 20, nullptr) == cudaErrorInvalidValue);
  CHECK(dsv4::cuda::sm90_fp8_gemv(u8, u8, 128, 128, u16, 1, u16, b.p, 16, nullptr) == cudaErrorInvalidValue);
  CHECK(dsv4::cuda::sm90_fp4_moe_gemv(u8, u8, 4, 128, 128, u16, 1, b.as<int32_t>(), b.as<float>(), 5, u16,
                                      b.p, 1 << 20, nullptr) == cudaErrorInvalidValue);
}

namespace {

struct MoeCase {
  int64_t hidden, inter;
  int m, top_k, experts;
  bool dup_in_token, invalid_slot;
};

void run_moe_case(std::mt19937_64& rng, const MoeCase& c) {
  const int64_t H = c.hidden, I = c.inter;
  const int m = c.m, K = c.top_k, E = c.experts, P = m * K;
  CAPTURE(H, I, m, K, E, c.dup_in_token, c.invalid_slot);
  namespace dc = dsv4::cuda;
  // Per expert checkpoint tensors and their tiled forms.
  const int64_t hb = dc::ceil_div(H, 32), ib = dc::ceil_div(I, 32);
  std::vector<std::vector<uint8_t>> w1(E), s1(E), w3(E), s3(E), w2(E), s2(E);
  const size_t b13 = dc::fp4_w13_expert_bytes(I, H), b2 = dc::fp4_w2_expert_bytes(H, I);
  std::vector<uint8_t> t13(b13 * E), t2(b2 * E);
  std::vector<dsv4::cpu::MoeExpertRef> views(E);
  for (int e = 0; e < E; ++e) {
    w1[e] = rand_bytes(rng, static_cast<size_t>(I * H / 2), 0, 255);
    w3[e] = rand_bytes(rng, static_cast<size_t>(I * H / 2), 0, 255);
    w2[e] = rand_bytes(rng, static_cast<size_t>(H * I / 2), 0, 255);
    s1[e] = rand_bytes(rng, static_cast<size_t>(I * hb), 119, 127);
    s3[e] = rand_bytes(rng, static_cast<size_t>(I * hb), 119, 127);
    s2[e] = rand_bytes(rng, static_cast<size_t>(H * ib), 119, 127);
    dc::fp4_relayout_w13(w1[e].data(), s1[e].data(), w3[e].data(), s3[e].data(), I, H, &t13[b13 * e]);
    dc::fp4_relayout_w2(w2[e].data(), s2[e].data(), H, I, &t2[b2 * e]);
    views[e] = {w1[e].data(), s1[e].data(), w3[e].data(), s3[e].data(), w2[e].data(), s2[e].data()};
  }
  auto x = rand_act(rng, m, H);
  // Routing: experts drawn from the first E-3 (the last three stay unused), repeats across tokens.
  std::uniform_int_distribution<int> pick(0, E - 4);
  std::uniform_real_distribution<float> wd(0.05f, 1.5f);
  std::vector<int32_t> ids(P);
  std::vector<float> tw(P);
  for (int t = 0; t < m; ++t)
    for (int j = 0; j < K; ++j) {
      int e;
      bool fresh;
      do {  // distinct within a token unless a duplicate is wanted
        e = pick(rng);
        fresh = true;
        for (int q = 0; q < j; ++q) fresh &= ids[t * K + q] != e;
      } while (!fresh);
      ids[t * K + j] = e;
      tw[t * K + j] = wd(rng);
    }
  if (m > 1) ids[K] = ids[0];  // token 1 shares token 0's first expert
  if (c.dup_in_token) ids[(m - 1) * K + 2] = ids[(m - 1) * K];
  if (c.invalid_slot) ids[(m - 1) * K + 1] = -1;
  const dsv4::cpu::MoeRef ref = dsv4::cpu::fp4_moe_ref(views, H, I, x.data(), m, ids.data(), tw.data(), K);

  DevBuf d13(t13.size()), d2(t2.size()), dx(x.size() * 2), dids(P * 4), dtw(P * 4), dy(size_t(m * H) * 2);
  upload(d13, t13);
  upload(d2, t2);
  upload(dx, x);
  upload(dids, ids);
  upload(dtw, tw);
  const int64_t hqs = dc::sm90_fp4_moe_hq_stride(I), ibk = dc::ceil_div(I, 128);
  DevBuf dhq(size_t(P * hqs)), dhs(size_t(P * (hqs / 128)) * 4);
  const size_t ws13 = dc::sm90_fp4_moe_w13_workspace_bytes(H, I, m, K);
  const size_t ws2 = dc::sm90_fp4_moe_w2_workspace_bytes(H, I, m, K);
  const size_t wsall = dc::sm90_fp4_moe_workspace_bytes(H, I, m, K);
  REQUIRE(ws13 > 0);
  REQUIRE(ws2 > 0);
  REQUIRE(wsall > 0);
  DevBuf w13ws(ws13), w2ws(ws2), allws(wsall);
  REQUIRE(cudaMemset(w13ws.p, 0, ws13) == cudaSuccess);
  REQUIRE(cudaMemset(w2ws.p, 0, ws2) == cudaSuccess);
  REQUIRE(cudaMemset(allws.p, 0, wsall) == cudaSuccess);

  // ---- stage 1: h quantised per 128 (e4m3 + scale) ----
  REQUIRE(cudaMemset(dhq.p, 0x7f, size_t(P * hqs)) == cudaSuccess);  // e4m3 NaN poison
  REQUIRE(cudaMemset(dhs.p, 0xff, size_t(P * (hqs / 128)) * 4) == cudaSuccess);
  REQUIRE(dc::sm90_fp4_moe_w13(d13.as<uint8_t>(), E, H, I, dx.as<uint16_t>(), m, dids.as<int32_t>(),
                               dtw.as<float>(), K, dhq.as<uint8_t>(), dhs.as<float>(), w13ws.p, ws13,
                               nullptr) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  auto hq = download<uint8_t>(dhq, size_t(P * hqs));
  auto hs = download<float>(dhs, size_t(P * (hqs / 128)));
  {
    ErrStat st;
    int64_t exact = 0, total = 0, scale_diff = 0;
    for (int p = 0; p < P; ++p) {
      if (ids[p] < 0) continue;
      for (int64_t b = 0; b < ibk; ++b) {
        const float want = dsv4::e8m0_to_f32(ref.hs[p * ibk + b]);
        scale_diff += hs[p * (hqs / 128) + b] != want;
      }
      for (int64_t i = 0; i < I; ++i) {
        const size_t ri = size_t(p * I + i);
        const float sc = hs[p * (hqs / 128) + i / 128];
        const double got = double(e4m3_to_f32(hq[p * hqs + i])) * sc;
        const double h = ref.h[ri], g = ref.g[ri], u = ref.u[ri];
        // g, u may each land one bf16 ulp away (kernel f32 vs exact): propagate through
        // w * silu(g) * u, then allow one e4m3 ulp (2^-3 relative) of the re-quantisation.
        const double dg = std::ldexp(std::fabs(g), -7) + std::ldexp(ref.g_abs[ri], -10);
        const double du = std::ldexp(std::fabs(u), -7) + std::ldexp(ref.u_abs[ri], -10);
        const double gc = std::min(g, 10.0);
        const double sig = std::fabs(gc / (1 + std::exp(-gc)));
        const double dh = std::fabs(tw[p]) * (1.1 * std::min(std::fabs(u), 10.0) * dg + (sig + 1.1 * dg) * du);
        const double tol = std::ldexp(std::fabs(h) + dh, -3) + dh + std::ldexp(std::fabs(h), -7) + sc * std::ldexp(1.0, -9);  // last: one subnormal step
        st.add(got, h, tol);
        exact += hq[p * hqs + i] == ref.hq[ri];
        ++total;
      }
    }
    INFO("stage 1: worst |err|/tol " << st.worst << ", bad " << st.bad << ", non-finite " << st.nonfinite
                                     << ", exact codes " << exact << "/" << total << ", scale diffs " << scale_diff);
    std::printf("moe w13 H=%lld I=%lld m=%d k=%d: worst |err|/tol = %.3f, exact hq %.4f, scale diffs %lld\n",
                (long long)H, (long long)I, m, K, st.worst, double(exact) / double(total), (long long)scale_diff);
    CHECK(st.nonfinite == 0);
    CHECK(st.bad == 0);
    CHECK(double(exact) >= 0.97 * double(total));
  }

  // ---- stage 2 on the GPU's own h: reference recomputed from exactly those inputs ----
  {
    REQUIRE(cudaMemset(dy.p, 0xff, size_t(m * H) * 2) == cudaSuccess);
    REQUIRE(dc::sm90_fp4_moe_w2(d2.as<uint8_t>(), E, H, I, dhq.as<uint8_t>(), dhs.as<float>(), m, dids.as<int32_t>(),
                                K, dy.as<uint16_t>(), w2ws.p, ws2, nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto y = download<uint16_t>(dy, size_t(m * H));
    std::vector<double> ys(static_cast<size_t>(H)), ya(static_cast<size_t>(H));
    std::vector<double> want(size_t(m * H), 0.0), tol(size_t(m * H), 0.0);
    std::vector<uint8_t> qs(static_cast<size_t>(ibk));
    for (int t = 0; t < m; ++t) {
      std::vector<int> order;
      for (int j = 0; j < K; ++j)
        if (ids[t * K + j] >= 0) order.push_back(j);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ids[t * K + a] < ids[t * K + b]; });
      std::vector<float> accf(size_t(H), 0.f);
      for (int j : order) {
        const int p = t * K + j, e = ids[p];
        for (int64_t b = 0; b < ibk; ++b) qs[b] = dsv4::f32_pow2_to_e8m0(hs[p * (hqs / 128) + b]);
        dsv4::cpu::fp4_linear_ref(w2[e].data(), s2[e].data(), H, I, &hq[p * hqs], qs.data(), ys.data(), ya.data(), nullptr);
        for (int64_t o = 0; o < H; ++o) {
          accf[o] += dsv4::round_bf16(static_cast<float>(ys[o]));
          tol[t * H + o] += std::ldexp(std::fabs(ys[o]), -7) + std::ldexp(ya[o], -10);
        }
      }
      for (int64_t o = 0; o < H; ++o) {
        want[t * H + o] = accf[o];
        tol[t * H + o] += std::ldexp(std::fabs(double(accf[o])), -8) + 1e-30;
      }
    }
    ErrStat st;
    for (size_t i = 0; i < y.size(); ++i) st.add(bf16_to_f32(y[i]), want[i], tol[i]);
    INFO("stage 2: worst |err|/tol " << st.worst << ", bad " << st.bad << ", non-finite " << st.nonfinite);
    std::printf("moe w2  H=%lld I=%lld m=%d k=%d: worst |err|/tol = %.3f\n", (long long)H, (long long)I, m, K, st.worst);
    CHECK(st.nonfinite == 0);
    CHECK(st.bad == 0);
  }

  // ---- ring pair (m <= 8): stage 1 writes bf16 h, stage 2 quantises it itself ----
  const bool ring = dc::sm90_fp4_moe_ring_ok(H, I, m, K);
  CHECK(ring == (m <= 8));
  // A bf16 h [P, h_stride] written by a ring-pair stage 1, poisoned with NaN before the launch.
  const int64_t hst = dc::sm90_fp4_moe_h_stride(I);
  // min_exact: share of h bit-identical to the reference. The f16 mma.sync paths sum each 32-input
  // group exactly in f32 (≈ 99 % identical, the rest f64-vs-f32 rounding ties); the FP8 tensor
  // cores (wgmma) keep fewer accumulator bits inside a group (observed 95.7–98.1 % over 14 cases),
  // so 90 % there: far from flaky, and a broken layout or mapping gives ≈ 0 %. The error bound
  // (bad == 0) is the same for both.
  auto check_h = [&](const std::vector<uint16_t>& h, const char* label, double min_exact) {
    ErrStat st;
    int64_t exact = 0, total = 0, untouched_bad = 0;
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < hst; ++i) {
        const bool used = ids[p] >= 0 && i < I;
        if (!used) {
          untouched_bad += h[p * hst + i] != 0xffff;
          continue;
        }
        const size_t ri = size_t(p * I + i);
        const double want = ref.h[ri], g = ref.g[ri], u = ref.u[ri];
        // g, u one bf16 ulp away at most (see stage 1 above), then h's own bf16 rounding.
        const double dg = std::ldexp(std::fabs(g), -7) + std::ldexp(ref.g_abs[ri], -10);
        const double du = std::ldexp(std::fabs(u), -7) + std::ldexp(ref.u_abs[ri], -10);
        const double gc = std::min(g, 10.0);
        const double sig = std::fabs(gc / (1 + std::exp(-gc)));
        const double dh = std::fabs(tw[p]) * (1.1 * std::min(std::fabs(u), 10.0) * dg + (sig + 1.1 * dg) * du);
        st.add(bf16_to_f32(h[p * hst + i]), want, dh + std::ldexp(std::fabs(want), -7) + 1e-30);
        exact += bf16_to_f32(h[p * hst + i]) == static_cast<float>(want);
        ++total;
      }
    }
    INFO(label << " stage 1: worst |err|/tol " << st.worst << ", bad " << st.bad << ", exact " << exact << "/"
               << total << ", written outside valid rows " << untouched_bad);
    std::printf("moe %s w13 H=%lld I=%lld m=%d k=%d: worst |err|/tol = %.3f, exact h %.4f\n", label, (long long)H,
                (long long)I, m, K, st.worst, double(exact) / double(total));
    CHECK(st.nonfinite == 0);
    CHECK(st.bad == 0);
    CHECK(untouched_bad == 0);
    CHECK(double(exact) >= min_exact * double(total));
  };
  if (ring) {  // the wgmma stage 1, same contract
    DevBuf dh(size_t(P * hst) * 2);
    REQUIRE(cudaMemset(dh.p, 0xff, size_t(P * hst) * 2) == cudaSuccess);
    REQUIRE(dc::sm90_fp4_moe_w13_wgmma(d13.as<uint8_t>(), E, H, I, dx.as<uint16_t>(), m, dids.as<int32_t>(),
                                       dtw.as<float>(), K, dh.as<uint16_t>(), nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    check_h(download<uint16_t>(dh, size_t(P * hst)), "wgmma", 0.90);
  }
  for (int warps : {16, 8}) {
    if (!dc::sm90_fp4_moe_ring_ok(H, I, m, K, warps)) continue;
    CAPTURE(warps);
    DevBuf dh(size_t(P * hst) * 2);
    REQUIRE(cudaMemset(dh.p, 0xff, size_t(P * hst) * 2) == cudaSuccess);  // bf16 NaN poison
    REQUIRE(dc::sm90_fp4_moe_w13_ring(d13.as<uint8_t>(), E, H, I, dx.as<uint16_t>(), m, dids.as<int32_t>(),
                                      dtw.as<float>(), K, dh.as<uint16_t>(), nullptr, true, warps) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto h = download<uint16_t>(dh, size_t(P * hst));
    check_h(h, warps == 8 ? "ring8" : "ring16", 0.97);
    // Stage 2 on the GPU's own h, reference from exactly those inputs (quantised per 128 on the CPU).
    REQUIRE(cudaMemset(dy.p, 0xff, size_t(m * H) * 2) == cudaSuccess);
    REQUIRE(dc::sm90_fp4_moe_w2_ring(d2.as<uint8_t>(), E, H, I, dh.as<uint16_t>(), m, dids.as<int32_t>(), K,
                                     dy.as<uint16_t>(), nullptr, true, false, warps) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto y = download<uint16_t>(dy, size_t(m * H));
    std::vector<double> ys(static_cast<size_t>(H)), ya(static_cast<size_t>(H));
    std::vector<uint8_t> q(static_cast<size_t>(I)), qs(static_cast<size_t>(ibk));
    ErrStat st;
    for (int t = 0; t < m; ++t) {
      std::vector<int> order;
      for (int j = 0; j < K; ++j)
        if (ids[t * K + j] >= 0) order.push_back(j);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ids[t * K + a] < ids[t * K + b]; });
      std::vector<float> accf(size_t(H), 0.f);
      std::vector<double> tol(size_t(H), 0.0);
      for (int j : order) {
        const int p = t * K + j, e = ids[p];
        dsv4::cpu::quantize_act_row(&h[p * hst], I, q.data(), qs.data());
        dsv4::cpu::fp4_linear_ref(w2[e].data(), s2[e].data(), H, I, q.data(), qs.data(), ys.data(), ya.data(), nullptr);
        for (int64_t o = 0; o < H; ++o) {
          accf[o] += dsv4::round_bf16(static_cast<float>(ys[o]));
          tol[o] += std::ldexp(std::fabs(ys[o]), -7) + std::ldexp(ya[o], -10);
        }
      }
      for (int64_t o = 0; o < H; ++o)
        st.add(bf16_to_f32(y[t * H + o]), accf[o], tol[o] + std::ldexp(std::fabs(double(accf[o])), -8) + 1e-30);
    }
    INFO("ring stage 2: worst |err|/tol " << st.worst << ", bad " << st.bad << ", non-finite " << st.nonfinite);
    std::printf("moe ring%d w2  H=%lld I=%lld m=%d k=%d: worst |err|/tol = %.3f\n", warps, (long long)H,
                (long long)I, m, K, st.worst);
    CHECK(st.nonfinite == 0);
    CHECK(st.bad == 0);
  }

  // ---- both stages through the one-call API (each pair), end-to-end reference, twice ----
  std::vector<uint16_t> stream_y;
  for (auto path : {dc::MoePath::kStream, dc::MoePath::kRing, dc::MoePath::kWgmma}) {
  if (path != dc::MoePath::kStream && !ring) continue;
  CAPTURE(static_cast<int>(path));
  std::vector<uint16_t> first;
  for (int rep = 0; rep < 2; ++rep) {
    REQUIRE(cudaMemset(dy.p, 0xff, size_t(m * H) * 2) == cudaSuccess);
    REQUIRE(dc::sm90_fp4_moe_gemv_path(path, d13.as<uint8_t>(), d2.as<uint8_t>(), E, H, I, dx.as<uint16_t>(), m,
                                       dids.as<int32_t>(), dtw.as<float>(), K, dy.as<uint16_t>(), allws.p, wsall,
                                       nullptr) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto y = download<uint16_t>(dy, size_t(m * H));
    if (rep == 1) {
      CHECK(std::memcmp(first.data(), y.data(), y.size() * 2) == 0);
      break;
    }
    first = y;
    if (path == dc::MoePath::kStream) stream_y = y;
    ErrStat st;
    for (int t = 0; t < m; ++t)
      for (int64_t o = 0; o < H; ++o) {
        // Per slot: one bf16 ulp of its output, accumulation error, and up to two e4m3 ulps
        // (2^-3 of the largest term each) from h codes that re-quantised differently.
        double tl = std::ldexp(std::fabs(ref.y[t * H + o]), -8) + 1e-30;
        for (int j = 0; j < K; ++j) {
          const size_t q = size_t((t * K + j) * H + o);
          if (ids[t * K + j] < 0) continue;
          tl += std::ldexp(std::fabs(ref.y_slot[q]), -7) + std::ldexp(ref.y_slot_abs[q], -10) +
                std::ldexp(ref.y_slot_max[q], -2);
        }
        st.add(bf16_to_f32(y[t * H + o]), ref.y[t * H + o], tl);
      }
    INFO("end to end: worst |err|/tol " << st.worst << ", bad " << st.bad << ", non-finite " << st.nonfinite);
    std::printf("moe e2e path=%d H=%lld I=%lld m=%d k=%d: worst |err|/tol = %.3f\n", static_cast<int>(path),
                (long long)H, (long long)I, m, K, st.worst);
    CHECK(st.nonfinite == 0);
    CHECK(st.bad == 0);
  }
  }

  // ---- one workspace sized for m = 16 serves every m and both pairs, in any order: launches of
  // other m (first token only) and of the ring pair in between leave the streaming pair's result
  // bit-identical (its counters sit at offsets that do not depend on m) ----
  {
    const size_t ws16 = dc::sm90_fp4_moe_workspace_bytes(H, I, 16, K);
    REQUIRE(ws16 >= wsall);
    DevBuf big(ws16), dy1(size_t(H) * 2);
    REQUIRE(cudaMemset(big.p, 0, ws16) == cudaSuccess);
    auto launch = [&](dc::MoePath path, int mm, uint16_t* out) {
      return dc::sm90_fp4_moe_gemv_path(path, d13.as<uint8_t>(), d2.as<uint8_t>(), E, H, I, dx.as<uint16_t>(), mm,
                                        dids.as<int32_t>(), dtw.as<float>(), K, out, big.p, ws16, nullptr);
    };
    REQUIRE(launch(dc::MoePath::kAuto, 1, dy1.as<uint16_t>()) == cudaSuccess);
    REQUIRE(launch(dc::MoePath::kStream, 1, dy1.as<uint16_t>()) == cudaSuccess);
    if (ring) REQUIRE(launch(dc::MoePath::kRing, m, dy.as<uint16_t>()) == cudaSuccess);
    REQUIRE(cudaMemset(dy.p, 0xff, size_t(m * H) * 2) == cudaSuccess);
    REQUIRE(launch(dc::MoePath::kStream, m, dy.as<uint16_t>()) == cudaSuccess);
    REQUIRE(launch(dc::MoePath::kStream, 1, dy1.as<uint16_t>()) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    auto y = download<uint16_t>(dy, size_t(m * H));
    CHECK(std::memcmp(stream_y.data(), y.data(), y.size() * 2) == 0);
  }
}

}  // namespace

TEST_CASE("sm90_fp4_moe matches the float64 reference", "[gpu][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const MoeCase cases[] = {
      {720, 200, 1, 4, 12, false, false}, {720, 200, 2, 6, 12, false, false},
      {720, 200, 3, 4, 12, true, false},  {720, 200, 7, 6, 12, false, true},
      {720, 200, 16, 4, 12, true, true},  {1024, 512, 1, 6, 9, false, false},
      {1024, 512, 16, 6, 9, false, false}, {264, 72, 7, 4, 20, true, false},
      {720, 200, 8, 6, 12, true, true},
  };
  for (const auto& c : cases) run_moe_case(rng, c);
}
