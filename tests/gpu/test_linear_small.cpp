// GPU tests of linear_small (lib/cuda/linear_small.cu, contract lib/cuda/kernels.hpp): the decode
// path of `linear` for at most kLinearSmallMaxRows rows, called directly and through linear(),
// against cpu::linear (grouped shapes: the row dequantisation and double dot product cpu::linear
// uses) in every weight format, with expert stacks (skipped rows), gathered rows, grouped input
// columns, FP8 activation quantisation and bf16 output; plus the Flash decode shapes, where the
// test asserts that linear_small itself ran (cudaSuccess, not cudaErrorNotSupported).
//
// Tolerance (as test_dense_kernels.cpp): the kernel accumulates in f32 where the CPU accumulates
// in double; the weights are exactly the dequantised ones (code × power-of-two scale, the same f32
// product) and the quantised activations are computed with the same formula, so a result is within
// (in + 2)·u·Σ|x'·w| of the double sum (any f32 summation order, fused products, final rounding;
// split-K partial sums included); bf16 outputs add one bf16 ulp: 2^-7·|v| + 2t.
// Every run draws fresh random inputs (seed printed on failure), poisons y with NaN (all-ones bits)
// and checks that every written value is finite and within tolerance and that padding columns and
// skipped rows still hold the poison.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "cuda/kernels.hpp"
#include "dsv4/cpu/ops.hpp"
#include "dsv4/cpu/threadpool.hpp"
#include "dsv4/cpu/weights.hpp"
#include "dsv4/dtypes.hpp"
#include "dsv4/numerics.hpp"
#include "dsv4/weight_view.hpp"

namespace {

namespace dc = dsv4::cuda;
namespace cpu = dsv4::cpu;
using dsv4::WeightFormat;

constexpr double kU = 0x1p-24;       // f32 unit roundoff
constexpr double kBf16Ulp = 0x1p-7;  // one bf16 ulp relative to the value

template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { REQUIRE(cudaMalloc(&p, (n ? n : 1) * sizeof(T)) == cudaSuccess); }
  explicit DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { put(h); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void put(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
  void poison() { REQUIRE(cudaMemset(p, 0xff, n * sizeof(T)) == cudaSuccess); }  // f32: NaN
};

bool is_poison(float v) { return dsv4::f32_to_bits(v) == 0xffffffffu; }

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

// Normal values with a per-row magnitude 2^[-3, 3] and ~1 % outliers ×40 (FP8 activation blocks
// with different scales); never zero.
std::vector<float> rand_rows(std::mt19937_64& rng, int64_t rows, int64_t n, bool bf16) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> ex(-3, 3), pick(0, 99);
  std::vector<float> v(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) {
    const float rs = std::ldexp(1.f, ex(rng));
    for (int64_t i = 0; i < n; ++i) {
      float f = nd(rng) * rs;
      if (pick(rng) == 0) f *= 40.f;
      if (f == 0.f) f = rs;
      v[static_cast<size_t>(r * n + i)] = bf16 ? dsv4::round_bf16(f) : f;
    }
  }
  return v;
}

struct Cmp {
  int64_t n = 0, identical = 0, bad = 0, nonfinite = 0;
  double worst = 0;
  void add(float got, float want, double tol) {
    ++n;
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    identical += dsv4::f32_to_bits(got) == dsv4::f32_to_bits(want);
    const double r = std::fabs(static_cast<double>(got) - want) / (tol + 1e-300);
    worst = std::max(worst, r);
    bad += r > 1.0;
  }
};

// A checkpoint-format weight stack on the host (test_dense_kernels.cpp's make_weight).
struct HostWeight {
  dsv4::WeightView shape;
  int64_t data_bytes = 0, scale_bytes = 0;  // per expert
  std::vector<uint8_t> data, scale;
  cpu::Linear cpu_view(int e) const {
    cpu::Linear l;
    l.name = "test";
    l.out = shape.out;
    l.in = shape.in;
    switch (shape.format) {
      case WeightFormat::f32: l.format = cpu::Linear::Format::f32; break;
      case WeightFormat::bf16: l.format = cpu::Linear::Format::bf16; break;
      case WeightFormat::fp8: l.format = cpu::Linear::Format::fp8; break;
      case WeightFormat::fp4: l.format = cpu::Linear::Format::fp4; break;
    }
    l.data = data.data() + e * data_bytes;
    l.scale = scale.empty() ? nullptr : scale.data() + e * scale_bytes;
    l.scale_cols = shape.scale_cols;
    l.block_out = shape.block_out;
    l.block_in = shape.block_in;
    return l;
  }
};

// fp8: random finite e4m3 codes, e8m0 scales 2^-8..2^0 per 128×128; fp4: random codes, scales
// per 1×32; bf16 / f32: normal values.
HostWeight make_weight(std::mt19937_64& rng, WeightFormat fmt, int64_t out, int64_t in, int experts) {
  HostWeight w;
  w.shape.format = fmt;
  w.shape.out = out;
  w.shape.in = in;
  if (fmt == WeightFormat::fp8) {
    w.shape.block_out = w.shape.block_in = 128;
    w.shape.scale_cols = (in + 127) / 128;
  } else if (fmt == WeightFormat::fp4) {
    w.shape.block_in = 32;
    w.shape.scale_cols = (in + 31) / 32;
  }
  w.data_bytes = w.shape.data_bytes();
  w.scale_bytes = w.shape.scale_bytes();
  w.data.resize(static_cast<size_t>(w.data_bytes * experts));
  w.scale.resize(static_cast<size_t>(w.scale_bytes * experts));
  std::uniform_int_distribution<int> byte(0, 255), sc(119, 127);
  std::normal_distribution<float> nd(0.f, 0.5f);
  switch (fmt) {
    case WeightFormat::fp8:
      for (auto& b : w.data) {
        b = static_cast<uint8_t>(byte(rng));
        if ((b & 0x7f) == 0x7f) b ^= 1;  // 0x7f / 0xff are NaN
      }
      break;
    case WeightFormat::fp4:
      for (auto& b : w.data) b = static_cast<uint8_t>(byte(rng));
      break;
    case WeightFormat::bf16:
      for (size_t i = 0; i < w.data.size(); i += 2) {
        const uint16_t h = dsv4::f32_to_bf16(nd(rng));
        w.data[i] = static_cast<uint8_t>(h & 0xff);
        w.data[i + 1] = static_cast<uint8_t>(h >> 8);
      }
      break;
    case WeightFormat::f32:
      for (size_t i = 0; i < w.data.size(); i += 4) {
        const float f = nd(rng);
        std::memcpy(w.data.data() + i, &f, 4);
      }
      break;
  }
  for (auto& b : w.scale) b = static_cast<uint8_t>(sc(rng));
  return w;
}

// mma: linear_small_mma called directly (it must take the case).
enum class Path { direct, via_linear, mma };

struct Case {
  WeightFormat fmt;
  int64_t out, in, rows;
  bool quant, bf16;
  int experts = 0;        // > 0: a stack, per-row expert ids (a third of the rows −1, at least one)
  bool gather = false;    // x_rows
  int64_t out_group = 0;  // grouped input columns
  int64_t x_pad = 3;      // x_stride = groups·in + x_pad (NaN padding)
};

// Runs one case on `path`; `expect_small`: linear_small must take it (direct: cudaSuccess).
// compare false: only that every written value is finite and the poison elsewhere survives (large
// shapes at 16 rows, where the double reference would dominate the test's time).
void run_case(std::mt19937_64& rng, const Case& c, Path path, bool expect_small, cpu::ThreadPool& pool,
              bool compare = true) {
  const int fmt = static_cast<int>(c.fmt);
  const int via = static_cast<int>(path);
  CAPTURE(fmt, c.out, c.in, c.rows, c.quant, c.bf16, c.experts, c.gather, c.out_group, via);
  const int64_t groups = c.out_group > 0 ? c.out / c.out_group : 1;
  const int64_t og = c.out / groups, width = groups * c.in;
  const int64_t x_stride = width + c.x_pad, y_stride = c.out + 5;
  const int E = std::max(1, c.experts);
  const HostWeight W = make_weight(rng, c.fmt, c.out, c.in, E);
  const int64_t nx = c.gather ? c.rows + 4 : c.rows;

  std::vector<float> x(static_cast<size_t>(nx * x_stride), std::nanf(""));
  const std::vector<float> xv = rand_rows(rng, nx, width, c.quant || c.bf16);
  for (int64_t r = 0; r < nx; ++r) std::copy_n(xv.begin() + r * width, width, x.begin() + r * x_stride);
  std::vector<int32_t> x_rows(static_cast<size_t>(c.rows)), ids(static_cast<size_t>(c.rows));
  std::uniform_int_distribution<int> pick_x(0, static_cast<int>(nx - 1)), pick_e(0, E - 1);
  for (int64_t r = 0; r < c.rows; ++r) {
    x_rows[r] = c.gather ? pick_x(rng) : static_cast<int32_t>(r);
    ids[r] = pick_e(rng);
  }
  if (c.experts > 0) {
    ids[c.rows / 2] = -1;
    for (int64_t r = 0; r < c.rows; r += 3) ids[r] = r == 0 ? ids[r] : -1;
  }

  DevBuf<uint8_t> d_data(W.data), d_scale(W.scale.empty() ? std::vector<uint8_t>(1) : W.scale);
  DevBuf<float> d_x(x), d_y(static_cast<size_t>(c.rows * y_stride));
  DevBuf<int32_t> d_xr(x_rows), d_ids(ids);
  d_y.poison();

  dc::LinearArgs a;
  a.w = W.shape;
  a.w.data = d_data.p;
  a.w.scale = W.scale.empty() ? nullptr : d_scale.p;
  if (c.experts > 0) {
    a.expert_ids = d_ids.p;
    a.expert_data_stride = W.data_bytes;
    a.expert_scale_stride = W.scale_bytes;
  }
  a.x = d_x.p;
  a.x_stride = x_stride;
  a.x_rows = c.gather ? d_xr.p : nullptr;
  a.y = d_y.p;
  a.y_stride = y_stride;
  a.rows = c.rows;
  a.out_group = c.out_group;
  a.quant_act = c.quant;
  a.bf16_out = c.bf16;
  if (path == Path::mma) {
    REQUIRE(dc::linear_small_mma(a, nullptr) == cudaSuccess);
  } else if (path == Path::direct) {
    const cudaError_t e = dc::linear_small(a, nullptr);
    if (expect_small) {
      REQUIRE(e == cudaSuccess);
    } else {
      REQUIRE((e == cudaSuccess || e == cudaErrorNotSupported));
      if (e == cudaErrorNotSupported) return;
    }
  } else {
    if (expect_small) {
      // The same arguments taken by linear_small directly (nothing launched twice: y is rewritten).
      REQUIRE(dc::linear_small(a, nullptr) == cudaSuccess);
      d_y.poison();
    }
    REQUIRE(dc::linear(a, nullptr) == cudaSuccess);
  }
  const std::vector<float> y = d_y.get();

  Cmp cmp;
  int64_t untouched_bad = 0;
  std::vector<float> xq(static_cast<size_t>(c.in)), yref(static_cast<size_t>(c.out)), wrow(static_cast<size_t>(c.in));
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* yr = y.data() + r * y_stride;
    for (int64_t o = c.out; o < y_stride; ++o) untouched_bad += !is_poison(yr[o]);
    if (c.experts > 0 && ids[r] < 0) {
      for (int64_t o = 0; o < c.out; ++o) untouched_bad += !is_poison(yr[o]);
      continue;
    }
    if (!compare) {
      for (int64_t o = 0; o < c.out; ++o) cmp.add(yr[o], 0.0f, INFINITY);
      continue;
    }
    const cpu::Linear L = W.cpu_view(c.experts > 0 ? ids[r] : 0);
    for (int64_t g = 0; g < groups; ++g) {
      const float* xs = x.data() + x_rows[r] * x_stride + g * c.in;
      std::copy_n(xs, c.in, xq.begin());
      if (c.quant) dsv4::fp8_act_quant_dequant(xq.data(), c.in);
      if (groups == 1) {
        cpu::linear(L, xq.data(), 1, yref.data(), pool, c.bf16 ? cpu::LinearOut::bf16 : cpu::LinearOut::f32);
      } else {
        for (int64_t o = g * og; o < (g + 1) * og; ++o) {
          L.dequant_row(o, wrow.data());
          const float v = static_cast<float>(cpu::dot(xq.data(), wrow.data(), c.in));
          yref[o] = c.bf16 ? dsv4::round_bf16(v) : v;
        }
      }
      for (int64_t o = g * og; o < (g + 1) * og; ++o) {
        L.dequant_row(o, wrow.data());
        double abs_sum = 0;
        for (int64_t i = 0; i < c.in; ++i) abs_sum += std::fabs(static_cast<double>(xq[i]) * wrow[i]);
        const double t = static_cast<double>(c.in + 2) * kU * abs_sum;
        cmp.add(yr[o], yref[o], c.bf16 ? kBf16Ulp * std::fabs(yref[o]) + 2 * t : t);
      }
    }
  }
  INFO("linear_small: " << cmp.n << " values, worst |err|/tol " << cmp.worst << ", out of tolerance " << cmp.bad
                        << ", non-finite " << cmp.nonfinite << ", bit-identical " << cmp.identical);
  CHECK(untouched_bad == 0);
  CHECK(cmp.n > 0);
  CHECK(cmp.nonfinite == 0);
  CHECK(cmp.bad == 0);
}

constexpr bool kModes[][2] = {{false, false}, {false, true}, {true, true}, {true, false}};  // {quant, bf16}

}  // namespace

TEST_CASE("linear_small matches cpu::linear in every format, 1..16 rows", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(4);
  struct Shape {
    WeightFormat f;
    int64_t out, in;
  };
  // Odd output counts; inputs that are and are not multiples of the 16-byte chunk rounds (512 B
  // per warp-wide load) and of the 128-value activation blocks (fp8 1040: a partial last block).
  const Shape shapes[] = {{WeightFormat::f32, 77, 516},    {WeightFormat::bf16, 1000, 1032},
                          {WeightFormat::fp8, 1000, 1040}, {WeightFormat::fp8, 77, 512},
                          {WeightFormat::fp4, 150, 224},   {WeightFormat::fp4, 33, 4096 + 96}};
  for (const auto& s : shapes)
    for (int64_t rows : {1, 2, 3, 5, 8, 16})
      for (const auto& m : kModes)
        for (Path p : {Path::direct, Path::via_linear}) run_case(rng, {s.f, s.out, s.in, rows, m[0], m[1]}, p, true, pool);
}

TEST_CASE("linear_small splits long inputs over clusters", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(4);
  // 16 rows × 8576 f32 do not fit one CTA's staging memory: the K slices of a cluster (6 ranks)
  // meet in distributed shared memory; small outputs also split K for parallelism.
  for (const auto& m : kModes) {
    run_case(rng, {WeightFormat::fp8, 77, 8192 + 384, 16, m[0], m[1]}, Path::direct, true, pool);
    run_case(rng, {WeightFormat::fp8, 300, 4096, 9, m[0], m[1]}, Path::direct, true, pool);
    run_case(rng, {WeightFormat::bf16, 40, 4096 + 8, 4, m[0], m[1]}, Path::direct, true, pool);
    run_case(rng, {WeightFormat::f32, 256, 4096, 1, m[0], m[1]}, Path::via_linear, true, pool);
    run_case(rng, {WeightFormat::fp4, 64, 8192, 16, m[0], m[1]}, Path::direct, true, pool);
  }
}

TEST_CASE("linear_small with expert ids, gathered rows and grouped input columns", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(4);
  for (const auto& m : kModes)
    for (Path p : {Path::direct, Path::via_linear}) {
      const bool q = m[0], b = m[1];
      // Expert stacks (routed w1/w3- and w2-like), rows with id −1 keep their poison.
      run_case(rng, {WeightFormat::fp4, 96, 512, 6, q, b, 5, true}, p, true, pool);
      run_case(rng, {WeightFormat::fp4, 200, 224, 16, q, b, 7, false}, p, true, pool);
      run_case(rng, {WeightFormat::fp8, 130, 256, 5, q, b, 3, true}, p, true, pool);
      run_case(rng, {WeightFormat::bf16, 40, 72, 3, q, b, 3, true}, p, true, pool);
      // Gathered rows without experts.
      run_case(rng, {WeightFormat::fp8, 200, 384, 3, q, b, 0, true}, p, true, pool);
      run_case(rng, {WeightFormat::f32, 33, 132, 16, q, b, 0, true}, p, true, pool);
      // Grouped (wo_a-like, HC-partials-like).
      run_case(rng, {WeightFormat::fp8, 3 * 70, 256, 3, q, b, 0, false, 70}, p, true, pool);
      run_case(rng, {WeightFormat::fp8, 4 * 24, 512, 5, q, b, 0, true, 24}, p, true, pool);
      run_case(rng, {WeightFormat::f32, 4 * 24, 1024, 2, q, b, 0, false, 24}, p, true, pool);
      run_case(rng, {WeightFormat::bf16, 4 * 33, 96, 16, q, b, 0, false, 33}, p, true, pool);
    }
  // More tiles than resident CTAs (on 132 SMs: two per CTA, 69 per group): CTAs whose tile run
  // crosses a group boundary restage their input rows.
  for (const auto& m : kModes) {
    run_case(rng, {WeightFormat::fp8, 4 * 1100, 512, 16, m[0], m[1], 0, true, 1100}, Path::direct, true, pool);
    run_case(rng, {WeightFormat::bf16, 4 * 1100, 512, 9, m[0], m[1], 0, false, 1100}, Path::direct, true, pool);
  }
}

TEST_CASE("linear_small declines what it does not take, before any launch", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(4);
  // Rows not a whole number of 16-byte chunks (fp8 392, bf16 200): NotSupported directly (the test
  // then stops), and linear() still computes them on its own paths.
  for (Path p : {Path::direct, Path::via_linear}) {
    run_case(rng, {WeightFormat::fp8, 200, 392, 3, true, true}, p, false, pool);
    run_case(rng, {WeightFormat::bf16, 77, 200, 2, false, false}, p, false, pool);
  }
  DevBuf<uint8_t> d(4096);
  DevBuf<float> x(64 * 17), y(64 * 17);
  dc::LinearArgs a;
  a.w.format = WeightFormat::f32;
  a.w.out = 16;
  a.w.in = 64;
  a.w.data = d.p;
  a.x = x.p;
  a.x_stride = 64;
  a.y = y.p;
  a.y_stride = 64;
  a.rows = 17;  // more than kLinearSmallMaxRows
  CHECK(dc::linear_small(a, nullptr) == cudaErrorNotSupported);
  a.rows = 0;
  CHECK(dc::linear_small(a, nullptr) == cudaSuccess);
  a.rows = -1;
  CHECK(dc::linear_small(a, nullptr) == cudaErrorInvalidValue);
  a.rows = 1;
  a.w.data = d.p + 4;  // not 16-byte aligned
  CHECK(dc::linear_small(a, nullptr) == cudaErrorNotSupported);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}

TEST_CASE("linear_small takes the Flash decode shapes", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(8);
  const WeightFormat f8 = WeightFormat::fp8, f4 = WeightFormat::fp4, b16 = WeightFormat::bf16,
                     f32 = WeightFormat::f32;
  struct Flash {
    const char* name;
    Case c;
  };
  // Official numerics: FP8 / FP4 linears quantise their input (wo_a does not), bf16 outputs.
  const Flash shapes[] = {
      {"wq_a", {f8, 1024, 4096, 1, true, true}},
      {"wkv", {f8, 512, 4096, 1, true, true}},
      {"wq_b", {f8, 32768, 1024, 1, true, true}},
      {"wo_a", {f8, 8192, 4096, 1, false, true, 0, false, 1024, 32768 - 8 * 4096}},
      {"wo_b", {f8, 4096, 8192, 1, true, true}},
      {"indexer wq_b", {f8, 8192, 1024, 1, true, true}},
      {"shared w1", {f8, 2048, 4096, 1, true, true}},
      {"shared w2", {f8, 4096, 2048, 1, true, true}},
      {"expert w1", {f4, 2048, 4096, 4, true, true, 6, true}},
      {"expert w2", {f4, 4096, 2048, 6, true, true, 8, false}},
      {"compressor wkv", {b16, 1024, 4096, 1, false, false}},
      {"compressor wkv (csa)", {b16, 512, 4096, 1, false, false}},
      {"indexer weights_proj", {b16, 64, 4096, 1, false, false}},
      {"router gate", {f32, 256, 4096, 1, false, false}},
      {"router gate 192", {f32, 192, 4096, 1, false, false}},
      {"hc mix partials", {f32, 96, 4096, 1, false, false, 0, false, 24, 16384 - 4 * 4096}},
  };
  for (const auto& s : shapes) {
    INFO(s.name);
    Case c = s.c;
    if (c.experts == 0) {  // 1 and 3 rows against the reference
      run_case(rng, c, Path::direct, true, pool);
      c.rows = 3;
      run_case(rng, c, Path::via_linear, true, pool);
    } else {  // tokens × top-k rows, one expert each
      run_case(rng, c, Path::direct, true, pool);
    }
    c.rows = 16;  // the largest bucket: taken, finite, poison kept
    run_case(rng, c, Path::direct, true, pool, false);
  }
}

// The tensor-core path of official FP8 linears (linear_small_mma: 1..8 rows, 128×128 blocks, whole
// 128-blocks of K, 16-row groups): its own shapes, odd row counts, gathered rows, the Flash shapes
// it takes; against cpu::linear within linear's f32 summation bound (its block sums come from the
// tensor cores, whose products are exact and whose sums of 32 stay inside that bound), poison kept.
TEST_CASE("linear_small_mma matches cpu::linear on official FP8 linears", "[gpu][dense][linear_small]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(8);
  const WeightFormat f8 = WeightFormat::fp8;
  for (int64_t rows : {1, 2, 3, 5, 8})
    for (bool bf16 : {true, false}) {
      Case c{f8, 48, 384, rows, true, bf16};
      c.x_pad = 4;  // 16-byte aligned rows (the forward's x_stride = in)
      run_case(rng, c, Path::mma, true, pool);
      c.gather = true;
      run_case(rng, c, Path::mma, true, pool);
      c = Case{f8, 272, 1280, rows, true, bf16};
      c.x_pad = 0;
      run_case(rng, c, Path::mma, true, pool);
    }
  struct Flash {
    const char* name;
    int64_t out, in;
  };
  for (const Flash& s : {Flash{"wq_a|wkv", 1536, 4096}, Flash{"wq_b", 32768, 1024}, Flash{"wo_b", 4096, 8192},
                         Flash{"indexer wq_b", 8192, 1024}, Flash{"shared w1|w3", 4096, 4096},
                         Flash{"shared w2", 4096, 2048}}) {
    INFO(s.name);
    Case c{f8, s.out, s.in, 1, true, true};
    c.x_pad = 0;
    run_case(rng, c, Path::mma, true, pool);
    c.rows = 4;
    run_case(rng, c, Path::mma, true, pool);
  }
  // What it declines, before any launch: odd K blocks, 9 rows, unquantised input, grouped output.
  DevBuf<uint8_t> d(4096 * 384);
  DevBuf<float> x(9 * 400), y(9 * 64);
  dc::LinearArgs a;
  a.w.format = f8;
  a.w.out = 64;
  a.w.in = 384;
  a.w.block_out = a.w.block_in = 128;
  a.w.scale_cols = 3;
  a.w.data = d.p;
  a.w.scale = d.p;
  a.x = x.p;
  a.x_stride = 384;
  a.y = y.p;
  a.y_stride = 64;
  a.rows = 9;
  a.quant_act = true;
  CHECK(dc::linear_small_mma(a, nullptr) == cudaErrorNotSupported);
  a.rows = 8;
  a.quant_act = false;
  CHECK(dc::linear_small_mma(a, nullptr) == cudaErrorNotSupported);
  a.quant_act = true;
  a.out_group = 32;
  CHECK(dc::linear_small_mma(a, nullptr) == cudaErrorNotSupported);
  a.out_group = 0;
  a.w.in = 320;
  CHECK(dc::linear_small_mma(a, nullptr) == cudaErrorNotSupported);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}
