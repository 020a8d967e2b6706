// GPU tests of the dense kernels (lib/cuda/dense_kernels.cu, contract lib/cuda/kernels.hpp) against
// their CPU twins: dsv4::cpu::linear / rms_norm / RopeTable::apply / hc_pre / hc_post / hc_head, and
// for the embedding, router, SwiGLU and MoE combine small host references written statement by
// statement after lib/cpu/forward.cpp and lib/cpu/moe.cpp. Every run draws fresh random inputs
// (the seed is printed on failure), uses odd sizes, poisons outputs (and unused padding) with NaN
// before the launch and checks that what must stay untouched did. The fused / split launchers
// (head_rms_norm_rope, kv_norm_rope_fp8, hc_pre_collapse + hc_pre_sinkhorn) are compared with the
// launch sequences they replace, on the same inputs: their results must be memcmp-identical.
//
// Tolerances (each stated where it is used) come from the one real difference: the kernels
// accumulate long sums in f32 where the CPU accumulates in double. A recursive f32 sum of n terms
// is within about n·u·Σ|terms| of the exact one (u = 2^-24), whatever the order; the kernels' short
// scalar work is double like the CPU's. In official numerics a result rounded to bf16 from two f32
// values within t of each other may differ by one bf16 ulp (≤ 2^-7·|v|: 8 significant bits), so
// those tolerances are 2^-7·|v| + 2t; the fraction of bit-identical results is reported. Ops whose
// arithmetic is the CPU twin's operation for operation (embedding, hc_post, the official head norm
// and the official MoE sum) must be bit-identical. The bandwidth-bound kernels (embed, hc_post,
// swiglu, moe_combine, rows_to_bf16, round_rows_bf16) are also run at the model's widths and odd
// ones, one row to a prefill-sized chunk, on their 16-byte vector paths and (arrays one float off
// alignment, odd strides) their element paths, against plain host loops of the same operations.
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
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "catch.hpp"
#include "cuda/gemm.hpp"
#include "cuda/kernels.hpp"
#include "cuda/workspace.hpp"
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
constexpr double kBf16Ulp = 0x1p-7;  // one bf16 ulp relative to the value (8 significant bits)

// ---- device buffers -------------------------------------------------------------------------

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
bool same_bits(float a, float b) { return dsv4::f32_to_bits(a) == dsv4::f32_to_bits(b); }
// Elements whose bytes differ (0: the arrays are memcmp-identical).
template <class T>
int64_t bytes_differ(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  int64_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return n;
}
int64_t count_poison(const std::vector<float>& v) {
  return std::count_if(v.begin(), v.end(), [](float f) { return is_poison(f); });
}
// RoPE frequencies 1 / 10000^(2i / rd), as the rope test uses.
std::vector<float> rope_inv_freq(int rd) {
  std::vector<float> f;
  for (int i = 0; i < rd / 2; ++i) f.push_back(static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / rd)));
  return f;
}

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

// ---- random inputs ------------------------------------------------------------------------------

// Normal values with a per-row magnitude 2^[-3, 3] and ~1 % outliers ×40, so the FP8 activation
// blocks get different scales; never zero.
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
std::vector<float> randn(std::mt19937_64& rng, size_t n, float sigma, float mean = 0.f) {
  std::normal_distribution<float> nd(mean, sigma);
  std::vector<float> v(n);
  for (auto& f : v) {
    f = nd(rng);
    if (f == 0.f) f = sigma;
  }
  return v;
}

// v with `shift` leading `fill` elements: a device copy of it, passed at p + shift, is misaligned
// for 16-byte vectors (shift 1), which sends the kernels down their element paths.
std::vector<float> shifted(const std::vector<float>& v, int shift, float fill = std::nanf("")) {
  std::vector<float> out(static_cast<size_t>(shift), fill);
  out.insert(out.end(), v.begin(), v.end());
  return out;
}
// Replaces about 1 in `every` values by an IEEE special: NaNs of several payloads and signs
// (signalling ones included), ±inf, ±0, f32 subnormals. Only for ops that are pure bit
// manipulation on the device and the host alike (GPU arithmetic returns one canonical NaN).
void sprinkle_specials(std::mt19937_64& rng, std::vector<float>& v, int every) {
  static constexpr uint32_t kSpecial[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff812345u, 0x7fbfffffu,
                                          0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u, 0x00000001u,
                                          0x807fffffu, 0x00400000u, 0x7f7fffffu, 0x7f7f8000u, 0x3f808000u};
  std::uniform_int_distribution<int> pick(0, every - 1), which(0, static_cast<int>(std::size(kSpecial)) - 1);
  for (auto& f : v)
    if (pick(rng) == 0) f = dsv4::bits_to_f32(kSpecial[which(rng)]);
}
// Rows with signed zeros and f32 subnormals sprinkled in (about 1 in 64): values every f32 / double
// path must carry through exactly.
void sprinkle_small(std::mt19937_64& rng, std::vector<float>& v) {
  std::uniform_int_distribution<int> pick(0, 63), which(0, 3);
  for (auto& f : v)
    if (pick(rng) == 0) {
      const int w = which(rng);
      f = w == 0 ? 0.0f : w == 1 ? -0.0f : w == 2 ? dsv4::bits_to_f32(0x00012345u) : dsv4::bits_to_f32(0x80400001u);
    }
}

// ---- comparison ---------------------------------------------------------------------------------

struct Cmp {
  int64_t n = 0, identical = 0, bad = 0, nonfinite = 0;
  double worst = 0;  // max |got − want| / tol
  void add(float got, float want, double tol) {
    ++n;
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    identical += same_bits(got, want);
    const double r = std::fabs(static_cast<double>(got) - want) / (tol + 1e-300);
    worst = std::max(worst, r);
    bad += r > 1.0;
  }
};
void check(const Cmp& c, const std::string& what, bool must_be_identical = false) {
  INFO(what << ": " << c.n << " values, worst |err|/tol " << c.worst << ", out of tolerance " << c.bad
            << ", non-finite " << c.nonfinite << ", bit-identical " << c.identical << " ("
            << (c.n ? 100.0 * c.identical / c.n : 100.0) << " %)");
  CHECK(c.n > 0);
  CHECK(c.nonfinite == 0);
  CHECK(c.bad == 0);
  if (must_be_identical) CHECK(c.identical == c.n);
}
// Official-numerics tolerance of a bf16-rounded result whose f32 value is within t.
double bf16_tol(float want, double t) { return kBf16Ulp * std::fabs(want) + 2 * t; }

// ============================ linear ===========================================================

// A checkpoint-format weight (a stack of `experts` identically shaped ones) on the host.
struct HostWeight {
  dsv4::WeightView shape;  // format, out, in, scale_cols, blocks (pointers unset)
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
    return l;  // `dense` empty: rows decode from data / scale
  }
};

// fp8: random e4m3 codes over the finite range (no NaN codes), e8m0 scales 2^-8..2^0 per 128×128;
// fp4: random codes, scales 2^-8..2^0 per 1×32; bf16 / f32: normal values.
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

struct LinCase {
  WeightFormat fmt;
  int64_t out, in, rows;
  bool quant, bf16;
  int experts = 0;         // > 0: a stack, per-row expert ids (one row −1)
  bool gather = false;     // x_rows
  int64_t out_group = 0;   // grouped input columns (wo_a)
  bool no_vec = false;     // force the scalar path (LinearArgs::no_vec)
  bool gemm = false;       // the prefill path instead (Gemm::linear: cuBLASLt over bf16 operands)
  bool promoted = false;   // … with gemm_bf16_promoted instead of cuBLASLt
};

void run_linear(std::mt19937_64& rng, const LinCase& c, cpu::ThreadPool& pool) {
  const int fmt = static_cast<int>(c.fmt);
  CAPTURE(fmt, c.out, c.in, c.rows, c.quant, c.bf16, c.experts, c.gather, c.out_group);
  const int64_t groups = c.out_group > 0 ? c.out / c.out_group : 1;
  const int64_t og = c.out / groups, width = groups * c.in;
  const int64_t x_stride = width + 3, y_stride = c.out + 5;  // padding that must be neither read nor written
  const int E = std::max(1, c.experts);
  const HostWeight W = make_weight(rng, c.fmt, c.out, c.in, E);
  const int64_t nx = c.gather ? c.rows + 4 : c.rows;

  std::vector<float> x(static_cast<size_t>(nx * x_stride), std::nanf(""));  // NaN padding: reading it shows
  const std::vector<float> xv = rand_rows(rng, nx, width, c.quant || c.bf16);
  for (int64_t r = 0; r < nx; ++r) std::copy_n(xv.begin() + r * width, width, x.begin() + r * x_stride);
  std::vector<int32_t> x_rows(static_cast<size_t>(c.rows)), ids(static_cast<size_t>(c.rows));
  std::uniform_int_distribution<int> pick_x(0, static_cast<int>(nx - 1)), pick_e(0, E - 1);
  for (int64_t r = 0; r < c.rows; ++r) {
    x_rows[r] = c.gather ? pick_x(rng) : static_cast<int32_t>(r);
    ids[r] = pick_e(rng);
  }
  if (c.experts > 0) ids[c.rows / 2] = -1;  // skipped: its y row must stay the poison

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
  a.no_vec = c.no_vec;
  if (c.gemm) {
    dc::Gemm gemm(c.promoted);
    dc::Workspace ws;
    ws.begin();
    REQUIRE(gemm.linear(a, ws, nullptr));
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  } else {
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
    const cpu::Linear L = W.cpu_view(c.experts > 0 ? ids[r] : 0);
    for (int64_t g = 0; g < groups; ++g) {
      const float* xs = x.data() + x_rows[r] * x_stride + g * c.in;
      std::copy_n(xs, c.in, xq.begin());
      // Each group's slice is its own input row: FP8 blocks of 128 from the slice's start.
      if (c.quant) dsv4::fp8_act_quant_dequant(xq.data(), c.in);
      if (groups == 1) {
        cpu::linear(L, xq.data(), 1, yref.data(), pool, c.bf16 ? cpu::LinearOut::bf16 : cpu::LinearOut::f32);
      } else {
        // attention.cpp's grouped wo_a: output o = dot(group slice, W row o).
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
        // f32 accumulation of `in` products (fused, so the products are exact) plus the final
        // f32 rounding: within (in + 2)·u·Σ|x'·w| of the double sum. The GEMM path's tensor cores
        // add exact bf16 products in f32 but may truncate instead of rounding when aligning
        // addends (up to 2u per addition): twice that bound.
        const double t = static_cast<double>(c.gemm ? 2 * c.in + 2 : c.in + 2) * kU * abs_sum;
        cmp.add(yr[o], yref[o], c.bf16 ? bf16_tol(yref[o], t) : t);
      }
    }
  }
  CHECK(untouched_bad == 0);
  check(cmp, "linear");
}

TEST_CASE("linear matches cpu::linear in every weight format", "[gpu][dense][linear]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(1);
  struct Shape {
    WeightFormat f;
    int64_t out, in;
  };
  // fp8: out spans two 128-row scale blocks, in = 392 ends in a partial 128-block; fp4: in a
  // multiple of 32 but not of 128 (as the checkpoint); bf16 / f32: nothing aligned.
  const Shape shapes[] = {{WeightFormat::f32, 77, 200},
                          {WeightFormat::bf16, 77, 200},
                          {WeightFormat::fp8, 200, 392},
                          {WeightFormat::fp4, 150, 224}};
  const bool modes[][2] = {{false, false}, {false, true}, {true, true}, {true, false}};  // {quant_act, bf16_out}
  for (const auto& s : shapes)
    for (int64_t rows : {1, 3, 17})
      for (const auto& m : modes) run_linear(rng, {s.f, s.out, s.in, rows, m[0], m[1]}, pool);
  // Rows longer than one shared-memory chunk (8192 values): the chunk loop and, with quant_act,
  // FP8 blocks on both sides of a chunk boundary.
  for (const auto& m : modes) {
    run_linear(rng, {WeightFormat::fp8, 40, 8192 + 392, 3, m[0], m[1]}, pool);
    run_linear(rng, {WeightFormat::fp4, 33, 8192 + 96, 2, m[0], m[1]}, pool);
  }
  run_linear(rng, {WeightFormat::bf16, 33, 8300, 2, false, true}, pool);
}

// The vectorised path (16-byte weight loads, 1/2/4/8 rows per CTA; dense_kernels.cu) on shapes it
// takes — rows 16-byte aligned, in % 128 == 0 for fp8 — at row counts that hit every R and a
// partial last CTA, against cpu::linear with the same tolerance as the scalar path (the same dot
// product, another f32 order), and the scalar path on the same shapes (kill switch).
TEST_CASE("linear's vectorised path matches cpu::linear in every format", "[gpu][dense][linear]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(1);
  struct Shape {
    WeightFormat f;
    int64_t out, in;
  };
  const Shape shapes[] = {{WeightFormat::f32, 50, 516},   {WeightFormat::bf16, 77, 1032},
                          {WeightFormat::fp8, 200, 384},  {WeightFormat::fp8, 136, 1536},
                          {WeightFormat::fp4, 96, 256},   {WeightFormat::fp4, 33, 4096 + 96}};
  for (const auto& sh : shapes)
    for (int64_t rows : {1, 2, 3, 5, 8, 9, 33})
      for (bool q : {false, true})
        for (bool nv : {false, true}) {
          LinCase c{sh.f, sh.out, sh.in, rows, q, q};
          c.no_vec = nv;
          run_linear(rng, c, pool);
        }
  for (bool q : {false, true}) {
    LinCase e{WeightFormat::fp8, 130, 256, 7, q, q, 3, true};  // experts, one row −1, gathered rows
    run_linear(rng, e, pool);
    LinCase f{WeightFormat::fp4, 64, 512, 6, q, q, 4, false};
    run_linear(rng, f, pool);
    LinCase g{WeightFormat::fp8, 4 * 24, 512, 5, q, true, 0, false, 24};  // grouped (wo_a-like)
    run_linear(rng, g, pool);
  }
}

TEST_CASE("linear with expert ids, gathered rows and grouped input columns", "[gpu][dense][linear]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(1);
  for (bool q : {false, true}) {
    // Expert stacks (the routed w1/w3 and w2 shapes of a tiny model), one row with id −1.
    run_linear(rng, {WeightFormat::fp4, 96, 224, 17, q, q, 3, true}, pool);
    run_linear(rng, {WeightFormat::fp4, 224, 96, 5, q, q, 4, false}, pool);
    run_linear(rng, {WeightFormat::fp8, 130, 200, 5, q, q, 2, true}, pool);
    run_linear(rng, {WeightFormat::bf16, 40, 72, 3, q, q, 3, true}, pool);
    // Gather without experts.
    run_linear(rng, {WeightFormat::fp8, 200, 392, 3, q, q, 0, true}, pool);
  }
  // Grouped (wo_a: bf16 output, no activation quantisation; and once with it on full FP8 blocks).
  run_linear(rng, {WeightFormat::fp8, 3 * 70, 200, 3, false, true, 0, false, 70}, pool);
  run_linear(rng, {WeightFormat::fp8, 2 * 130, 256, 1, false, true, 0, true, 130}, pool);
  run_linear(rng, {WeightFormat::bf16, 4 * 33, 96, 17, false, true, 0, false, 33}, pool);
  run_linear(rng, {WeightFormat::fp8, 3 * 40, 256, 3, true, true, 0, false, 40}, pool);
}

// The prefill path (lib/cuda/gemm.hpp): the same linear — gathered rows, grouped columns (wo_a,
// without quantisation as the model uses it), quant_act, bf16_out, F32 weights as three exact bf16
// parts — as bf16 GEMMs over exactly dequantised weights, at prefill-like row counts, against cpu::linear (tolerance in
// run_linear). Inputs in official mode are bf16 values (rand_rows with `bf16`), as the contract asks.
TEST_CASE("Gemm::linear (prefill, tensor cores) matches cpu::linear", "[gpu][dense][linear][gemm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::ThreadPool pool(1);
  struct Shape {
    WeightFormat f;
    int64_t out, in;
  };
  const Shape shapes[] = {{WeightFormat::fp8, 200, 392}, {WeightFormat::fp8, 136, 1536}, {WeightFormat::fp4, 150, 224},
                          {WeightFormat::fp4, 96, 4096 + 96}, {WeightFormat::bf16, 77, 1032},
                          {WeightFormat::bf16, 33, 200}, {WeightFormat::fp8, 40, 203},
                          {WeightFormat::f32, 77, 200}, {WeightFormat::f32, 256, 1032}};
  // {quant_act, bf16_out}; without quantisation the inputs are bf16 values (bf16_out makes
  // run_linear draw them so).
  const bool modes[][2] = {{false, true}, {true, true}, {true, false}};
  for (const auto& sh : shapes)
    for (int64_t rows : {17, 40, 300})
      for (const auto& m : modes) {
        LinCase c{sh.f, sh.out, sh.in, rows, m[0], m[1]};
        c.gemm = true;
        c.gather = rows == 40;
        run_linear(rng, c, pool);
        c.promoted = true;
        run_linear(rng, c, pool);
      }
  for (int64_t rows : {17, 129}) {
    LinCase g{WeightFormat::fp8, 3 * 70, 256, rows, false, true, 0, false, 70};  // grouped (wo_a)
    g.gemm = true;
    run_linear(rng, g, pool);
    LinCase h{WeightFormat::bf16, 4 * 33, 96, rows, false, true, 0, true, 33};
    h.gemm = true;
    run_linear(rng, h, pool);
    LinCase m{WeightFormat::f32, 4 * 24, 512, rows, false, false, 0, false, 24};  // HC mixes (f32, grouped)
    m.gemm = true;
    m.bf16 = true;  // bf16 inputs (run_linear draws them so), rounded output
    run_linear(rng, m, pool);
  }
}

// How far each path's f32 result lies from the exact dot product, in units of u·Σ|x'·w|: mean
// |error| and mean signed error (a bias shows truncating accumulation). Prints the figures the
// forward tests' GEMM-path bounds rest on; asserts only the proven bound of run_linear.
TEST_CASE("Gemm::linear vs linear: accumulation error of each path", "[gpu][dense][gemm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t out = 512, in = 4096, rows = 64;
  const HostWeight W = make_weight(rng, WeightFormat::fp8, out, in, 1);
  const std::vector<float> x = rand_rows(rng, rows, in, true);
  std::vector<float> xq = x;
  for (int64_t r = 0; r < rows; ++r) dsv4::fp8_act_quant_dequant(xq.data() + r * in, in);
  DevBuf<uint8_t> d_data(W.data), d_scale(W.scale);
  DevBuf<float> d_x(x), d_y(static_cast<size_t>(rows * out));
  dc::LinearArgs a;
  a.w = W.shape;
  a.w.data = d_data.p;
  a.w.scale = d_scale.p;
  a.x = d_x.p;
  a.x_stride = in;
  a.y = d_y.p;
  a.y_stride = out;
  a.rows = rows;
  a.quant_act = true;
  dsv4::WeightView hv = W.shape;
  hv.data = W.data.data();
  hv.scale = W.scale.data();
  std::vector<double> exact(static_cast<size_t>(rows * out)), mag(exact.size());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0, m = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double t = static_cast<double>(xq[r * in + i]) * hv.at(o, i);
        acc += t;
        m += std::fabs(t);
      }
      exact[r * out + o] = acc;
      mag[r * out + o] = m * kU;
    }
  for (int mode : {0, 1, 2}) {  // linear, Gemm with cuBLASLt, Gemm with gemm_bf16_promoted
    const bool use_gemm = mode > 0;
    d_y.poison();
    if (use_gemm) {
      dc::Gemm gemm(mode == 2);
      dc::Workspace ws;
      ws.begin();
      REQUIRE(gemm.linear(a, ws, nullptr));
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    } else {
      REQUIRE(dc::linear(a, nullptr) == cudaSuccess);
    }
    const std::vector<float> y = d_y.get();
    double sum_abs = 0, sum_signed = 0, worst = 0;
    for (size_t k = 0; k < y.size(); ++k) {
      const double e = (static_cast<double>(y[k]) - exact[k]) / mag[k];
      sum_abs += std::fabs(e);
      sum_signed += e * (exact[k] < 0 ? -1.0 : 1.0);  // > 0: away from zero, < 0: toward zero
      worst = std::max(worst, std::fabs(e));
    }
    const double n = static_cast<double>(y.size());
    std::printf("  %-16s error / (u·Σ|x·w|): mean %.4f, mean toward-magnitude %+.4f, worst %.3f (bound %lld)\n",
                mode == 0 ? "linear" : mode == 1 ? "Gemm (cuBLASLt)" : "Gemm (promoted)", sum_abs / n, sum_signed / n, worst,
                static_cast<long long>(use_gemm ? 2 * in + 2 : in + 2));
    CHECK(worst <= static_cast<double>(use_gemm ? 2 * in + 2 : in + 2));
  }
}

// The GEMM path's operand conversions are exact: every weight element is WeightView::at's value
// and every quantised activation is fp8_act_quant_dequant's, bit for bit.
TEST_CASE("weight_to_bf16 and rows_to_bf16 are exact", "[gpu][dense][gemm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (auto [fmt, out, in] : {std::tuple{WeightFormat::fp8, 200, 392}, std::tuple{WeightFormat::fp8, 131, 203},
                              std::tuple{WeightFormat::fp4, 150, 224}, std::tuple{WeightFormat::fp4, 37, 202}}) {
    CAPTURE(static_cast<int>(fmt), out, in);
    const HostWeight W = make_weight(rng, fmt, out, in, 1);
    DevBuf<uint8_t> d_data(W.data), d_scale(W.scale);
    DevBuf<uint16_t> d_out(static_cast<size_t>((out - 5) * in));
    dsv4::WeightView v = W.shape;
    v.data = d_data.p;
    v.scale = d_scale.p;
    REQUIRE(dc::weight_to_bf16(v, 5, out - 5, d_out.p, nullptr) == cudaSuccess);
    const std::vector<uint16_t> got = d_out.get();
    dsv4::WeightView hv = W.shape;
    hv.data = W.data.data();
    hv.scale = W.scale.data();
    int64_t bad = 0;
    for (int64_t r = 0; r < out - 5; ++r)
      for (int64_t i = 0; i < in; ++i) bad += got[r * in + i] != dsv4::f32_to_bf16(hv.at(r + 5, i));
    CHECK(bad == 0);
  }
  for (int64_t n : {128, 300, 1000}) {
    const int64_t rows = 9, stride = n + 7;
    std::vector<float> x(static_cast<size_t>(rows * stride));
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (auto& v : x) v = nd(rng);
    std::vector<int32_t> map = {8, 0, 3, 3, 7};
    DevBuf<float> d_x(x);
    DevBuf<int32_t> d_map(map);
    DevBuf<uint16_t> d_o(static_cast<size_t>(5 * n));
    REQUIRE(dc::rows_to_bf16(d_x.p, stride, d_map.p, 5, n, true, d_o.p, n, nullptr) == cudaSuccess);
    const std::vector<uint16_t> got = d_o.get();
    int64_t bad = 0;
    std::vector<float> ref(static_cast<size_t>(n));
    for (int r = 0; r < 5; ++r) {
      std::copy_n(x.begin() + map[r] * stride, n, ref.begin());
      dsv4::fp8_act_quant_dequant(ref.data(), n);
      for (int64_t i = 0; i < n; ++i) bad += got[r * n + i] != dsv4::f32_to_bf16(ref[i]);
    }
    CHECK(bad == 0);
  }
}

// Rows for the FP8 1×128 activation quantisation: per block a random maximum A = ±2^[-24, 24]·[1, 2)
// held by one element (rows where A = 1e-30: the 1e-4 amax floor sets the scale; some blocks all
// zero), the others a mix of uniform values in [-A, A], exact midpoints between neighbouring e4m3
// values on the block's scale grid (the ties, subnormal codes included), grid values ± 1 f32 ulp,
// values below half the grid's smallest step (→ ±0), ±0 and f32 subnormals; where A·(1/448) rounds
// down the largest values are clamped at ±448. Anything above A is replaced, so A stays the maximum.
std::vector<float> qdq_rows(std::mt19937_64& rng, int64_t rows, int64_t n) {
  std::uniform_int_distribution<int> ex(-24, 24), kind(0, 9), code(0, 0x7d), coin(0, 1), pos(0, 127);
  std::uniform_real_distribution<float> mag(1.0f, 2.0f), sym(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b0 = 0; b0 < n; b0 += 128) {
      const int64_t e = std::min(b0 + 128, n);
      float* blk = v.data() + r * n;
      if ((r + b0 / 128) % 11 == 5) {  // an all-zero block (amax 0: the floor)
        for (int64_t i = b0; i < e; ++i) blk[i] = coin(rng) ? 0.0f : -0.0f;
        continue;
      }
      const float A = r % 7 == 3 ? 1e-30f * mag(rng) : std::ldexp(mag(rng), ex(rng));
      const float sc = dsv4::e8m0_to_f32(dsv4::fp8_act_scale_e8m0(A));
      for (int64_t i = b0; i < e; ++i) {
        float f;
        switch (kind(rng)) {
          case 0:
          case 1:
          case 2: f = A * sym(rng); break;
          case 3:
          case 4: {  // a tie: the midpoint of two neighbouring e4m3 values (exact in f32), scaled
            const int c = code(rng);
            f = (dsv4::e4m3_to_f32(static_cast<uint8_t>(c)) + dsv4::e4m3_to_f32(static_cast<uint8_t>(c + 1))) * 0.5f * sc;
            break;
          }
          case 5: {  // a grid value ± one ulp
            const float g = dsv4::e4m3_to_f32(static_cast<uint8_t>(code(rng))) * sc;
            f = std::nextafter(g, coin(rng) ? INFINITY : 0.0f);
            break;
          }
          case 6: f = std::ldexp(sym(rng), -11) * sc; break;  // |q| < 2^-11: rounds to ±0
          case 7: f = 0.0f; break;
          case 8: f = std::ldexp(sym(rng), -130); break;  // an f32 subnormal
          default: f = A * sym(rng) * 1e-3f; break;
        }
        if (coin(rng)) f = -f;
        if (!(std::fabs(f) <= A)) f = A * sym(rng);
        blk[i] = f;
      }
      blk[std::min(b0 + pos(rng), e - 1)] = coin(rng) ? A : -A;
    }
  return v;
}

// rows_to_bf16 at odd widths (n % 128 ≠ 0, n % 4 ≠ 0), strides and row counts — the vector path
// (n, strides multiples of 4) and the element path (x_stride = n + 3, out_stride = n + 1) — gathered
// or not, quantised or not: every element fp8_act_quant_dequant's value (or the input) converted by
// f32_to_bf16, bit for bit; the output's padding keeps its poison. Unquantised rows carry IEEE
// specials (NaN payloads, ±inf, subnormals): the conversion is bit manipulation on both sides.
TEST_CASE("rows_to_bf16 is bit-exact at odd sizes, ties and tiny values included", "[gpu][dense][gemm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int64_t n : {4096, 1030, 300, 203, 128, 4})
    for (int64_t rows : {1, 3, 300})
      for (int pad : {0, 3, 4})
        for (bool gather : {false, true})
          for (bool quant : {false, true}) {
            if (rows == 300 && n != 4096 && n != 1030 && n != 203) continue;
            CAPTURE(n, rows, pad, gather, quant);
            const int64_t x_stride = n + pad, out_stride = pad == 3 ? n + 1 : n + pad;
            const int64_t nx = gather ? rows + 5 : rows;
            std::vector<float> xv = qdq_rows(rng, nx, n);
            if (!quant) sprinkle_specials(rng, xv, 50);
            std::vector<float> x(static_cast<size_t>(nx * x_stride), std::nanf(""));
            for (int64_t r = 0; r < nx; ++r) std::copy_n(xv.begin() + r * n, n, x.begin() + r * x_stride);
            std::vector<int32_t> map(static_cast<size_t>(rows));
            std::uniform_int_distribution<int> pick(0, static_cast<int>(nx - 1));
            for (int64_t r = 0; r < rows; ++r) map[r] = gather ? pick(rng) : static_cast<int32_t>(r);
            DevBuf<float> d_x(x);
            DevBuf<int32_t> d_map(map);
            DevBuf<uint16_t> d_o(static_cast<size_t>(rows * out_stride));
            REQUIRE(cudaMemset(d_o.p, 0xff, d_o.n * 2) == cudaSuccess);
            REQUIRE(dc::rows_to_bf16(d_x.p, x_stride, gather ? d_map.p : nullptr, rows, n, quant, d_o.p, out_stride,
                                     nullptr) == cudaSuccess);
            const std::vector<uint16_t> got = d_o.get();
            int64_t bad = 0, pad_bad = 0;
            std::vector<float> ref(static_cast<size_t>(n));
            for (int64_t r = 0; r < rows; ++r) {
              std::copy_n(xv.begin() + map[r] * n, n, ref.begin());
              if (quant) dsv4::fp8_act_quant_dequant(ref.data(), n);
              for (int64_t i = 0; i < n; ++i) bad += got[r * out_stride + i] != dsv4::f32_to_bf16(ref[i]);
              for (int64_t i = n; i < out_stride; ++i) pad_bad += got[r * out_stride + i] != 0xffff;
            }
            CHECK(bad == 0);
            CHECK(pad_bad == 0);
          }
}

// round_rows_bf16 in place at odd widths and strides, vector (ld % 4 == 0, aligned) and element
// paths (ld = n + 3, or the array one float off 16-byte alignment): the first n values of each row
// round_bf16'ed — IEEE specials included, bit manipulation on both sides — and the padding untouched.
TEST_CASE("round_rows_bf16 rounds the rows in place and nothing else", "[gpu][dense][gemm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int64_t n : {4096, 1030, 203, 5, 1})
    for (int64_t rows : {1, 3, 300})
      for (int pad : {0, 3, 4})
        for (int shift : {0, 1}) {
          CAPTURE(n, rows, pad, shift);
          const int64_t ld = n + pad;
          std::vector<float> v = randn(rng, static_cast<size_t>(rows * ld), 3.0f);
          sprinkle_specials(rng, v, 40);
          DevBuf<float> d(shifted(v, shift));
          REQUIRE(dc::round_rows_bf16(d.p + shift, ld, rows, n, nullptr) == cudaSuccess);
          const std::vector<float> all = d.get();
          const std::vector<float> got(all.begin() + shift, all.end());
          std::vector<float> want = v;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < n; ++i) want[r * ld + i] = dsv4::round_bf16(v[r * ld + i]);
          CHECK(bytes_differ(got, want) == 0);
          if (shift) CHECK(dsv4::f32_to_bits(all[0]) == dsv4::f32_to_bits(std::nanf("")));  // before the array: untouched
        }
}

// ============================ embedding ========================================================

TEST_CASE("embed copies the token rows into every stream", "[gpu][dense]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t V = 50, D = 200;
  for (bool is_f32 : {false, true})
    for (bool official : {false, true})
      for (int hc : {1, 4})
        for (int64_t S : {1, 17}) {
          CAPTURE(is_f32, official, hc, S);
          const std::vector<float> tf = randn(rng, static_cast<size_t>(V * D), 1.f);
          std::vector<uint16_t> tb(tf.size());
          for (size_t i = 0; i < tf.size(); ++i) tb[i] = dsv4::f32_to_bf16(tf[i]);
          std::vector<int32_t> tok(static_cast<size_t>(S));
          std::uniform_int_distribution<int> pick(0, static_cast<int>(V - 1));
          for (auto& t : tok) t = pick(rng);
          DevBuf<float> d_tf(tf), d_X(static_cast<size_t>(S * hc * D));
          DevBuf<uint16_t> d_tb(tb);
          DevBuf<int32_t> d_tok(tok);
          d_X.poison();
          REQUIRE(dc::embed(is_f32 ? static_cast<const void*>(d_tf.p) : d_tb.p, is_f32, d_tok.p, S, D, hc, official,
                            d_X.p, nullptr) == cudaSuccess);
          const std::vector<float> X = d_X.get();
          // forward.cpp: the decoded row, bf16-rounded in official numerics, in every stream: exact.
          Cmp cmp;
          for (int64_t s = 0; s < S; ++s)
            for (int j = 0; j < hc; ++j)
              for (int64_t d = 0; d < D; ++d) {
                float want = is_f32 ? tf[tok[s] * D + d] : dsv4::bf16_to_f32(tb[tok[s] * D + d]);
                if (official) want = dsv4::round_bf16(want);
                cmp.add(X[(s * hc + j) * D + d], want, 0.0);
              }
          check(cmp, "embed", true);
        }
}

// The embedding at the model's width and odd ones, one token to a prefill-sized chunk: BF16 tables
// through the 16-byte (D % 8 == 0), 8-byte (D % 8 == 4) and element paths, F32 tables through the
// 16-byte and element paths, X one float off 16-byte alignment (element path); tables with IEEE
// specials (NaN payloads, ±inf, subnormals: the decode and the official rounding are bit
// manipulation on both sides). Every stream of every token bit-identical to forward.cpp's copy.
TEST_CASE("embed is bit-identical at odd sizes on every path", "[gpu][dense]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t V = 37;
  for (int64_t D : {4096, 1028, 203})
    for (int64_t S : {1, 3, 300})
      for (int hc : {1, 4})
        for (bool is_f32 : {false, true})
          for (bool official : {false, true})
            for (int shift : {0, 1}) {
              if (S == 300 && (hc == 1 || shift == 1)) continue;
              CAPTURE(D, S, hc, is_f32, official, shift);
              std::vector<float> tf = randn(rng, static_cast<size_t>(V * D), 1.f);
              sprinkle_specials(rng, tf, 100);
              std::vector<uint16_t> tb(tf.size());
              for (size_t i = 0; i < tf.size(); ++i) tb[i] = static_cast<uint16_t>(dsv4::f32_to_bits(tf[i]) >> 16);
              std::vector<int32_t> tok(static_cast<size_t>(S));
              std::uniform_int_distribution<int> pick(0, static_cast<int>(V - 1));
              for (auto& t : tok) t = pick(rng);
              DevBuf<float> d_tf(tf), d_X(static_cast<size_t>(S * hc * D + shift));
              DevBuf<uint16_t> d_tb(tb);
              DevBuf<int32_t> d_tok(tok);
              d_X.poison();
              REQUIRE(dc::embed(is_f32 ? static_cast<const void*>(d_tf.p) : d_tb.p, is_f32, d_tok.p, S, D, hc, official,
                                d_X.p + shift, nullptr) == cudaSuccess);
              const std::vector<float> all = d_X.get();
              std::vector<float> want(static_cast<size_t>(shift), dsv4::bits_to_f32(0xffffffffu));
              for (int64_t s = 0; s < S; ++s)
                for (int j = 0; j < hc; ++j)
                  for (int64_t d = 0; d < D; ++d) {
                    float w = is_f32 ? tf[tok[s] * D + d] : dsv4::bf16_to_f32(tb[tok[s] * D + d]);
                    want.push_back(official ? dsv4::round_bf16(w) : w);
                  }
              CHECK(bytes_differ(all, want) == 0);
            }
}

// ============================ norms ============================================================

TEST_CASE("rms_norm matches cpu::rms_norm", "[gpu][dense][norm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  for (int64_t rows : {1, 3, 17})
    for (int64_t n : {200, 4100})
      for (bool weighted : {false, true})
        for (bool bf16 : {false, true})
          for (bool in_place : {false, true}) {
            CAPTURE(rows, n, weighted, bf16, in_place);
            const int64_t xs = n + 7, os = in_place ? xs : n + 3;
            std::vector<float> x(static_cast<size_t>(rows * xs), std::nanf(""));
            const std::vector<float> xv = rand_rows(rng, rows, n, bf16);
            for (int64_t r = 0; r < rows; ++r) std::copy_n(xv.begin() + r * n, n, x.begin() + r * xs);
            const std::vector<float> w = randn(rng, static_cast<size_t>(n), 0.3f, 1.0f);
            DevBuf<float> d_x(x), d_w(w), d_out(static_cast<size_t>(rows * os));
            d_out.poison();
            float* out = in_place ? d_x.p : d_out.p;
            REQUIRE(dc::rms_norm(d_x.p, xs, weighted ? d_w.p : nullptr, rows, n, eps, bf16, out, os, nullptr) ==
                    cudaSuccess);
            const std::vector<float> got = in_place ? d_x.get() : d_out.get();
            Cmp cmp;
            int64_t pad_bad = 0;
            std::vector<float> ref(static_cast<size_t>(n));
            for (int64_t r = 0; r < rows; ++r) {
              cpu::rms_norm(xv.data() + r * n, weighted ? w.data() : nullptr, n, static_cast<double>(eps), ref.data(),
                            bf16);
              for (int64_t i = 0; i < n; ++i) {
                // f32 sum of n squares: relative error ≤ n·u, halved by the square root, plus the
                // f32 rounding of the result; (n + 2)·u relative keeps a factor 2 of margin.
                const double t = static_cast<double>(n + 2) * kU * std::fabs(ref[i]);
                cmp.add(got[r * os + i], ref[i], bf16 ? bf16_tol(ref[i], t) : t);
              }
              for (int64_t i = n; i < os; ++i) pad_bad += in_place ? !std::isnan(got[r * os + i]) : !is_poison(got[r * os + i]);
            }
            CHECK(pad_bad == 0);
            check(cmp, "rms_norm");
          }
}

TEST_CASE("head_rms_norm matches head_rms_norm_bf16 / cpu::rms_norm", "[gpu][dense][norm]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  for (int64_t rows : {1, 3, 17 * 4})
    for (int64_t n : {64, 200, 512})
      for (bool official : {false, true}) {
        CAPTURE(rows, n, official);
        const std::vector<float> q = rand_rows(rng, rows, n, official);
        DevBuf<float> d_q(q);
        REQUIRE(dc::head_rms_norm(d_q.p, rows, n, eps, official, nullptr) == cudaSuccess);
        const std::vector<float> got = d_q.get();
        Cmp cmp;
        std::vector<float> ref(q);
        for (int64_t r = 0; r < rows; ++r) {
          float* row = ref.data() + r * n;
          if (official) dsv4::head_rms_norm_bf16(row, n, eps);  // attention.cpp's two branches
          else cpu::rms_norm(row, nullptr, n, static_cast<double>(eps), row);
        }
        for (int64_t i = 0; i < rows * n; ++i) {
          // Reference: as rms_norm. Official: the kernel runs head_rms_norm_bf16's operations in
          // its order (sequential f32 sum), so it must be bit-identical.
          const double t = static_cast<double>(n + 2) * kU * std::fabs(ref[i]);
          cmp.add(got[i], ref[i], official ? 0.0 : t);
        }
        check(cmp, official ? "head_rms_norm (official)" : "head_rms_norm (reference)", official);
      }
}

// ============================ RoPE =============================================================

TEST_CASE("rope matches RopeTable::apply", "[gpu][dense][rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int rd = 64;
  const int64_t rows = 17, stride = 150, col = 10;
  cpu::RopeTable table;
  for (int i = 0; i < rd / 2; ++i)
    table.inv_freq.push_back(static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / rd)));
  DevBuf<float> d_f(table.inv_freq);
  for (int64_t p0 : {int64_t{0}, int64_t{7}, int64_t{1000003}})  // large positions: large f32 angles
    for (int64_t rpp : {1, 4})
      for (bool inverse : {false, true})
        for (bool bf16 : {false, true}) {
          CAPTURE(p0, rpp, inverse, bf16);
          const std::vector<float> v = rand_rows(rng, rows, stride, bf16);
          DevBuf<float> d_v(v);
          REQUIRE(dc::rope(d_v.p, rows, stride, col, rd, d_f.p, p0, rpp, inverse, bf16, nullptr) == cudaSuccess);
          const std::vector<float> got = d_v.get();
          std::vector<float> ref(v);
          for (int64_t r = 0; r < rows; ++r) table.apply(ref.data() + r * stride + col, p0 + r / rpp, inverse, bf16);
          Cmp cmp;
          int64_t outside_bad = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < stride; ++i) {
              const int64_t k = r * stride + i;
              if (i < col || i >= col + rd) {
                outside_bad += !same_bits(got[k], v[k]);
                continue;
              }
              // Same f32 angle; the device's double sin/cos are within a couple of double ulps of
              // libm's, so after the f32 rounding the results agree or differ by one f32 ulp of the
              // magnitude |a| + |b| of the pair.
              const int64_t pair = r * stride + col + ((i - col) & ~int64_t{1});
              const double t = 0x1p-23 * (std::fabs(v[pair]) + std::fabs(v[pair + 1]));
              cmp.add(got[k], ref[k], bf16 ? bf16_tol(ref[k], t) : t);
            }
          CHECK(outside_bad == 0);
          check(cmp, "rope");
        }
}

// ============================ fused query / KV epilogues =======================================

struct HeadRopeCase {
  int64_t rows, n, col;
  int rd;
  int64_t rpp;  // rows per position (heads per token)
};

// head_rms_norm_rope against head_rms_norm followed by rope (bf16_out = official) on the same rows,
// bit for bit, over the whole buffer: the values past the last row (NaN poison) stay untouched.
TEST_CASE("head_rms_norm_rope equals head_rms_norm then rope, bit for bit", "[gpu][dense][norm][rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  // Flash decode (64 heads × 512, rope on the last 64) at S = 1, 3, 17 and a prefill-sized chunk
  // (8-warp CTAs); rows of other widths: one short pass, two passes with a partial one, odd n and an
  // odd rope column, rope over the whole row, a small rope.
  const HeadRopeCase cases[] = {{64, 512, 448, 64, 64},      {3 * 64, 512, 448, 64, 64}, {17 * 64, 512, 448, 64, 64},
                                {40 * 64, 512, 448, 64, 64}, {7, 192, 128, 64, 7},       {21, 192, 100, 64, 7},
                                {5, 1100, 1036, 64, 5},      {9, 193, 129, 64, 3},       {3, 64, 0, 64, 1},
                                {16, 40, 6, 16, 4}};
  for (const HeadRopeCase& c : cases)
    for (int64_t p0 : {int64_t{0}, int64_t{1000003}})
      for (bool official : {false, true}) {
        CAPTURE(c.rows, c.n, c.col, c.rd, c.rpp, p0, official);
        const std::vector<float> inv = rope_inv_freq(c.rd);
        std::vector<float> q = rand_rows(rng, c.rows, c.n, official);
        const size_t body = q.size();
        q.resize(body + 37, std::nanf(""));
        DevBuf<float> d_inv(inv), d_a(q), d_b(q);
        REQUIRE(cudaMemset(d_a.p + body, 0xff, 37 * sizeof(float)) == cudaSuccess);
        REQUIRE(cudaMemset(d_b.p + body, 0xff, 37 * sizeof(float)) == cudaSuccess);
        REQUIRE(dc::head_rms_norm(d_a.p, c.rows, c.n, eps, official, nullptr) == cudaSuccess);
        REQUIRE(dc::rope(d_a.p, c.rows, c.n, c.col, c.rd, d_inv.p, p0, c.rpp, false, official, nullptr) == cudaSuccess);
        REQUIRE(dc::head_rms_norm_rope(d_b.p, c.rows, c.n, eps, official, c.col, c.rd, d_inv.p, p0, c.rpp, nullptr) ==
                cudaSuccess);
        const std::vector<float> a = d_a.get(), b = d_b.get();
        int64_t changed = 0;
        for (size_t i = 0; i < body; ++i) changed += !same_bits(a[i], q[i]);
        CHECK(changed > 0);  // the sequence did rewrite the rows
        REQUIRE(bytes_differ(b, a) == 0);
        REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
        CHECK(count_poison(std::vector<float>(b.begin() + static_cast<std::ptrdiff_t>(body), b.end())) == 37);
      }
}

struct KvCase {
  int64_t S, n, col;
  int rd;
  int64_t x_stride, out_stride;  // out_stride 0: in place (out = x, x_stride)
  bool weighted;
};

// kv_norm_rope_fp8 against rms_norm, rope and (official) kv_fp8_simulate on the same input, as
// attention() calls them: from the fused wq_a|wkv output (x_stride = q_lora_rank + head_dim) into
// kv, and in place. The whole output buffer (rows and their padding) must be identical; padding
// keeps its poison (in place: its input NaNs).
TEST_CASE("kv_norm_rope_fp8 equals rms_norm, rope and kv_fp8_simulate, bit for bit", "[gpu][dense][norm][rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  std::vector<KvCase> cases;
  for (int64_t S : {1, 3, 17}) {
    cases.push_back({S, 512, 448, 64, 1024 + 512, 512, true});  // has_wqkv: qkv + qlr → kv
    cases.push_back({S, 512, 448, 64, 512, 0, true});           // in place
    cases.push_back({S, 200, 136, 64, 203, 205, true});         // a partial FP8 block
    cases.push_back({S, 193, 129, 64, 193 + 6, 0, false});      // odd n and rope column, unweighted
  }
  cases.push_back({2, 64, 0, 64, 70, 66, true});  // rope only, no FP8 dims
  for (const KvCase& c : cases)
    for (int64_t p0 : {int64_t{0}, int64_t{7}, int64_t{1000003}})
      for (bool official : {false, true}) {
        const bool in_place = c.out_stride == 0;
        const int64_t os = in_place ? c.x_stride : c.out_stride;
        CAPTURE(c.S, c.n, c.col, c.rd, c.x_stride, os, in_place, c.weighted, p0, official);
        const std::vector<float> inv = rope_inv_freq(c.rd);
        std::vector<float> x(static_cast<size_t>(c.S * c.x_stride), std::nanf(""));  // NaN padding
        const std::vector<float> xv = rand_rows(rng, c.S, c.n, official);
        for (int64_t r = 0; r < c.S; ++r) std::copy_n(xv.begin() + r * c.n, c.n, x.begin() + r * c.x_stride);
        const std::vector<float> w = randn(rng, static_cast<size_t>(c.n), 0.3f, 1.0f);
        DevBuf<float> d_inv(inv), d_w(w), d_xa(x), d_xb(x), d_oa(static_cast<size_t>(c.S * os)),
            d_ob(static_cast<size_t>(c.S * os));
        d_oa.poison();
        d_ob.poison();
        float* oa = in_place ? d_xa.p : d_oa.p;
        float* ob = in_place ? d_xb.p : d_ob.p;
        const float* wp = c.weighted ? d_w.p : nullptr;
        REQUIRE(dc::rms_norm(d_xa.p, c.x_stride, wp, c.S, c.n, eps, official, oa, os, nullptr) == cudaSuccess);
        REQUIRE(dc::rope(oa, c.S, os, c.col, c.rd, d_inv.p, p0, 1, false, official, nullptr) == cudaSuccess);
        if (official) REQUIRE(dc::kv_fp8_simulate(oa, c.S, os, c.col, nullptr) == cudaSuccess);
        REQUIRE(dc::kv_norm_rope_fp8(d_xb.p, c.x_stride, wp, c.S, c.n, eps, official, c.col, c.rd, d_inv.p, p0, ob, os,
                                     nullptr) == cudaSuccess);
        const std::vector<float> a = in_place ? d_xa.get() : d_oa.get(), b = in_place ? d_xb.get() : d_ob.get();
        REQUIRE(bytes_differ(b, a) == 0);
        REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
        int64_t pad_bad = 0, nan_values = 0;
        for (int64_t r = 0; r < c.S; ++r) {
          for (int64_t i = 0; i < c.n; ++i) nan_values += std::isnan(b[r * os + i]);
          for (int64_t i = c.n; i < os; ++i) pad_bad += in_place ? !std::isnan(b[r * os + i]) : !is_poison(b[r * os + i]);
        }
        CHECK(nan_values == 0);  // every value was written (none is poison or NaN)
        CHECK(pad_bad == 0);
        if (!in_place) CHECK(bytes_differ(d_xb.get(), x) == 0);  // the input is left intact
      }
}

// ============================ hyper-connections ================================================

struct HcCase {
  int hc;
  int64_t D;
  int64_t S;
};

// Bound on |m_gpu − m_cpu| over the token's mixes: the f32 dot over hc·D terms and the f32 sum of
// squares inside 1/rms, each within (width + 2)·u of its sum of |terms|.
double mix_error(const std::vector<float>& fn, int64_t mix, const float* X, int64_t width, double norm_eps) {
  double ss = 0;
  for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(X[i]) * X[i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(width) + norm_eps);
  double e = 0;
  for (int64_t m = 0; m < mix; ++m) {
    double a = 0, d = 0;
    for (int64_t i = 0; i < width; ++i) {
      a += std::fabs(static_cast<double>(X[i]) * fn[m * width + i]);
      d += static_cast<double>(X[i]) * fn[m * width + i];
    }
    e = std::max(e, static_cast<double>(width + 2) * kU * (a + std::fabs(d)) * r);
  }
  return e;
}

TEST_CASE("hc_pre, hc_post and hc_head match the CPU twins", "[gpu][dense][hc]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> scale_d(0.5f, 2.0f);
  const float hc_eps = 1e-6f, norm_eps = 1e-6f;
  for (const HcCase c : {HcCase{4, 200, 3}, HcCase{4, 392, 1}, HcCase{2, 96, 5}})
    for (bool official : {false, true}) {
      const int hc = c.hc;
      const int64_t D = c.D, S = c.S, width = hc * D, mix = (2 + hc) * hc;
      CAPTURE(hc, D, S, official);
      cpu::HcWeights w{randn(rng, static_cast<size_t>(mix * width), 2.0f / std::sqrt(static_cast<float>(width))),
                       randn(rng, static_cast<size_t>(mix), 0.5f), {scale_d(rng), scale_d(rng), scale_d(rng)}};
      cpu::HcWeights wh{randn(rng, static_cast<size_t>(hc * width), 2.0f / std::sqrt(static_cast<float>(width))),
                        randn(rng, static_cast<size_t>(hc), 0.5f), {scale_d(rng)}};
      cpu::HcShape sh{hc, D, 20, static_cast<double>(hc_eps), static_cast<double>(norm_eps), official};
      const std::vector<float> X = rand_rows(rng, S * hc, D, official);
      DevBuf<float> d_fn(w.fn), d_base(w.base), d_scale(w.scale), d_hfn(wh.fn), d_hbase(wh.base), d_hscale(wh.scale);
      DevBuf<float> d_X(X), d_x(static_cast<size_t>(S * D)), d_post(static_cast<size_t>(S * hc)),
          d_comb(static_cast<size_t>(S * hc * hc)), d_h(static_cast<size_t>(S * D));
      d_x.poison();
      d_post.poison();
      d_comb.poison();
      d_h.poison();
      dc::HcParams p;
      p.fn = d_fn.p;
      p.base = d_base.p;
      p.scale = d_scale.p;
      p.hc = hc;
      p.D = D;
      p.sinkhorn_iters = sh.sinkhorn_iters;
      p.hc_eps = hc_eps;
      p.norm_eps = norm_eps;
      p.official = official;
      REQUIRE(dc::hc_pre(p, d_X.p, S, d_x.p, d_post.p, d_comb.p, nullptr) == cudaSuccess);
      dc::HcParams ph = p;
      ph.fn = d_hfn.p;
      ph.base = d_hbase.p;
      ph.scale = d_hscale.p;
      REQUIRE(dc::hc_head(ph, d_X.p, S, d_h.p, nullptr) == cudaSuccess);
      const std::vector<float> gx = d_x.get(), gpost = d_post.get(), gcomb = d_comb.get(), gh = d_h.get();

      Cmp cx, cpost, ccomb, chead;
      std::vector<float> rx(static_cast<size_t>(D)), rpost(static_cast<size_t>(hc)),
          rcomb(static_cast<size_t>(hc * hc)), rh(static_cast<size_t>(D));
      for (int64_t s = 0; s < S; ++s) {
        const float* Xs = X.data() + s * width;
        cpu::hc_pre(sh, w, Xs, rx.data(), rpost.data(), rcomb.data());
        cpu::hc_head(sh, wh, Xs, rh.data());
        // e bounds the mix error. post = 2σ(m·s1 + b) moves by ≤ 2·¼·s1·e; pre by ≤ ¼·s0·e. comb:
        // the logits move by ≤ s2·e, and Sinkhorn (20 iterations, hc 2 and 4) moved its entries by at
        // most 0.62× a logit perturbation in 20 000 random trials (entries ≤ 1: diagonal rescalings
        // do not enlarge a perturbation in the Hilbert projective metric); 8·s2·e leaves ample
        // margin. Each adds the f32 rounding of the output (2^-23 relative, with margin).
        const double e = mix_error(w.fn, mix, Xs, width, sh.norm_eps);
        const double eh = mix_error(wh.fn, hc, Xs, width, sh.norm_eps);
        for (int j = 0; j < hc; ++j) cpost.add(gpost[s * hc + j], rpost[j], 0.5 * w.scale[1] * e + 0x1p-23 * std::fabs(rpost[j]));
        for (int k = 0; k < hc * hc; ++k)
          ccomb.add(gcomb[s * hc * hc + k], rcomb[k], 8.0 * w.scale[2] * e + 0x1p-23 * std::fabs(rcomb[k]));
        for (int64_t d = 0; d < D; ++d) {
          double ax = 0;
          for (int j = 0; j < hc; ++j) ax += std::fabs(Xs[j * D + d]);
          // x = Σ_j pre_j·X_j: the pre errors weighted by |X_j|, plus the f32 rounding.
          const double tx = 0.25 * w.scale[0] * e * ax + 0x1p-23 * std::fabs(rx[d]);
          const double th = 0.25 * wh.scale[0] * eh * ax + 0x1p-23 * std::fabs(rh[d]);
          cx.add(gx[s * D + d], rx[d], official ? bf16_tol(rx[d], tx) : tx);
          chead.add(gh[s * D + d], rh[d], official ? bf16_tol(rh[d], th) : th);
        }
      }
      check(cpost, "hc_pre post");
      check(ccomb, "hc_pre comb");
      check(cx, "hc_pre x");
      check(chead, "hc_head");

      // hc_post on the CPU's own post / comb (so only hc_post itself is compared): double sums of
      // exact float products in hc.cpp's order, hence bit-identical.
      std::vector<float> post_all(static_cast<size_t>(S * hc)), comb_all(static_cast<size_t>(S * hc * hc));
      for (int64_t s = 0; s < S; ++s)
        cpu::hc_pre(sh, w, X.data() + s * width, rx.data(), post_all.data() + s * hc, comb_all.data() + s * hc * hc);
      const std::vector<float> y = rand_rows(rng, S, D, official), R = rand_rows(rng, S * hc, D, official);
      DevBuf<float> d_y(y), d_R(R), d_pa(post_all), d_ca(comb_all), d_Xn(static_cast<size_t>(S * width));
      d_Xn.poison();
      REQUIRE(dc::hc_post(p, d_y.p, d_R.p, d_pa.p, d_ca.p, S, d_Xn.p, nullptr) == cudaSuccess);
      const std::vector<float> gXn = d_Xn.get();
      std::vector<float> rXn(static_cast<size_t>(width));
      Cmp cpostk;
      for (int64_t s = 0; s < S; ++s) {
        cpu::hc_post(sh, y.data() + s * D, R.data() + s * width, post_all.data() + s * hc,
                     comb_all.data() + s * hc * hc, rXn.data());
        for (int64_t i = 0; i < width; ++i) cpostk.add(gXn[s * width + i], rXn[i], 0.0);
      }
      check(cpostk, "hc_post", true);
    }
}

// hc_post on its own, at the model's width and odd ones (D = 203: the element path; D = 4096 and
// 1028 with y, R and X_new one float off 16-byte alignment: the element path at full width), one
// token to a prefill-sized chunk, hc 4 and 2 (compile-time hc) and 1, 3, 6 (any hc), post / comb
// random (not from hc_pre), inputs with ±0 and f32 subnormals: every output bit-identical to a
// plain loop of hc.cpp's double arithmetic — double(post)·y, + double(comb[j, k])·R[j] for j
// ascending, f32, bf16 in official numerics — with the output NaN-poisoned before the launch.
struct HcPostCase {
  int hc;
  int64_t D, S;
};

TEST_CASE("hc_post is bit-identical to hc.cpp's loop at odd sizes on every path", "[gpu][dense][hc]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> post_d(0.0f, 2.0f), comb_d(0.0f, 1.0f);
  for (const HcPostCase c : {HcPostCase{4, 4096, 1}, HcPostCase{4, 4096, 3}, HcPostCase{4, 4096, 300},
                             HcPostCase{4, 1028, 3}, HcPostCase{4, 203, 300}, HcPostCase{4, 1030, 3},
                             HcPostCase{2, 4096, 3}, HcPostCase{2, 203, 300}, HcPostCase{1, 1030, 3},
                             HcPostCase{3, 4096, 1}, HcPostCase{3, 203, 3}, HcPostCase{6, 1028, 5}})
    for (bool official : {false, true})
      for (int shift : {0, 1}) {
        const int hc = c.hc;
        const int64_t D = c.D, S = c.S, width = hc * D;
        CAPTURE(hc, D, S, official, shift);
        std::vector<float> y = rand_rows(rng, S, D, official), R = rand_rows(rng, S * hc, D, official);
        sprinkle_small(rng, y);
        sprinkle_small(rng, R);
        std::vector<float> post(static_cast<size_t>(S * hc)), comb(static_cast<size_t>(S * hc * hc));
        for (auto& v : post) v = post_d(rng);
        for (auto& v : comb) v = comb_d(rng);
        DevBuf<float> d_y(shifted(y, shift)), d_R(shifted(R, shift)), d_post(post), d_comb(comb),
            d_X(static_cast<size_t>(S * width + shift));
        d_X.poison();
        dc::HcParams p;
        p.hc = hc;
        p.D = D;
        p.official = official;
        REQUIRE(dc::hc_post(p, d_y.p + shift, d_R.p + shift, d_post.p, d_comb.p, S, d_X.p + shift, nullptr) ==
                cudaSuccess);
        const std::vector<float> all = d_X.get();
        std::vector<float> want(static_cast<size_t>(shift), dsv4::bits_to_f32(0xffffffffu));
        for (int64_t s = 0; s < S; ++s)
          for (int k = 0; k < hc; ++k)
            for (int64_t d = 0; d < D; ++d) {
              double acc = static_cast<double>(post[s * hc + k]) * y[s * D + d];
              for (int j = 0; j < hc; ++j)
                acc += static_cast<double>(comb[(s * hc + j) * hc + k]) * R[(s * hc + j) * D + d];
              want.push_back(official ? dsv4::round_bf16(static_cast<float>(acc)) : static_cast<float>(acc));
            }
        CHECK(bytes_differ(all, want) == 0);
      }
}

// hc_pre split in two launches (decode: the Sinkhorn on a side stream) against hc_pre itself, with
// the partial dots (HcParams::partials) both take: x_out, post and comb memcmp-identical, the
// Sinkhorn's kill switch (one thread) identical too, and the mixes within f32 error of a double
// evaluation. S ≤ 16 runs hc_pre's 1024-thread order (a cluster of 8 CTAs per token in
// hc_pre_collapse; S = 16 is the largest such grid), S = 17 its 256-thread order; D = 4096 (Flash)
// and widths hc·D that are no multiple of 1024; hc 1…5 (warp Sinkhorn) and 6 (hc·hc > 32: serial);
// 20, 1 and 0 iterations.
struct HcSplitCase {
  int hc;
  int64_t D, S;
  int iters;
};

TEST_CASE("hc_pre_collapse + hc_pre_sinkhorn reproduce hc_pre bit for bit", "[gpu][dense][hc]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> scale_d(0.5f, 2.0f);
  const float hc_eps = 1e-6f, norm_eps = 1e-6f;
  const HcSplitCase cases[] = {{4, 4096, 1, 20}, {4, 4096, 3, 20}, {4, 4096, 17, 20}, {4, 520, 1, 20},
                               {4, 520, 3, 20},  {4, 520, 16, 20}, {4, 520, 17, 20}, {4, 203, 2, 1},
                               {2, 96, 5, 20},   {3, 130, 17, 0},  {5, 64, 3, 20},   {6, 200, 3, 20},
                               {6, 200, 17, 20}, {1, 300, 2, 20}};
  for (const HcSplitCase& c : cases)
    for (bool official : {false, true}) {
      const int hc = c.hc;
      const int64_t D = c.D, S = c.S, width = hc * D, mix = (2 + hc) * hc;
      CAPTURE(hc, D, S, c.iters, official);
      const std::vector<float> fn = randn(rng, static_cast<size_t>(mix * width), 2.0f / std::sqrt(static_cast<float>(width)));
      const std::vector<float> base = randn(rng, static_cast<size_t>(mix), 0.5f);
      const std::vector<float> scale = {scale_d(rng), scale_d(rng), scale_d(rng)};
      const std::vector<float> X = rand_rows(rng, S * hc, D, official);
      // hc_partials' grouped linear: column j·mix + i = X[s, j] · fn_i[j·D, (j+1)·D).
      std::vector<float> part(static_cast<size_t>(S * hc * mix));
      for (int64_t s = 0; s < S; ++s)
        for (int j = 0; j < hc; ++j)
          for (int64_t i = 0; i < mix; ++i) {
            const float* xs = X.data() + (s * hc + j) * D;
            const float* f = fn.data() + i * width + j * D;
            double acc = 0;
            for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(xs[d]) * f[d];
            part[(s * hc + j) * mix + i] = static_cast<float>(acc);
          }
      DevBuf<float> d_fn(fn), d_base(base), d_scale(scale), d_X(X), d_part(part);
      DevBuf<float> d_xr(static_cast<size_t>(S * D)), d_pr(static_cast<size_t>(S * hc)),
          d_cr(static_cast<size_t>(S * hc * hc)), d_x(static_cast<size_t>(S * D)), d_post(static_cast<size_t>(S * hc)),
          d_comb(static_cast<size_t>(S * hc * hc)), d_posts(static_cast<size_t>(S * hc)),
          d_combs(static_cast<size_t>(S * hc * hc));
      DevBuf<double> d_mix(static_cast<size_t>(S * mix));
      for (DevBuf<float>* b : {&d_xr, &d_pr, &d_cr, &d_x, &d_post, &d_comb, &d_posts, &d_combs}) b->poison();
      d_mix.poison();  // all-ones bits: a NaN double
      dc::HcParams p;
      p.fn = d_fn.p;
      p.base = d_base.p;
      p.scale = d_scale.p;
      p.hc = hc;
      p.D = D;
      p.sinkhorn_iters = c.iters;
      p.hc_eps = hc_eps;
      p.norm_eps = norm_eps;
      p.official = official;
      p.partials = d_part.p;
      REQUIRE(dc::hc_pre(p, d_X.p, S, d_xr.p, d_pr.p, d_cr.p, nullptr) == cudaSuccess);
      REQUIRE(dc::hc_pre_collapse(p, d_X.p, S, d_x.p, d_mix.p, nullptr) == cudaSuccess);
      REQUIRE(dc::hc_pre_sinkhorn(p, d_mix.p, S, d_post.p, d_comb.p, nullptr) == cudaSuccess);
      REQUIRE(dc::hc_pre_sinkhorn(p, d_mix.p, S, d_posts.p, d_combs.p, nullptr, true) == cudaSuccess);
      const std::vector<float> xr = d_xr.get(), pr = d_pr.get(), cr = d_cr.get();
      CHECK(count_poison(xr) + count_poison(pr) + count_poison(cr) == 0);  // hc_pre wrote everything
      REQUIRE(bytes_differ(d_x.get(), xr) == 0);
      REQUIRE(bytes_differ(d_post.get(), pr) == 0);
      REQUIRE(bytes_differ(d_comb.get(), cr) == 0);
      REQUIRE(bytes_differ(d_posts.get(), pr) == 0);
      REQUIRE(bytes_differ(d_combs.get(), cr) == 0);

      // m_i = (Σ_j partials, f32) / rms: the f32 sum of hc terms within (hc + 1)·u·Σ|terms|, the
      // f32 sum of squares within (width + 2)·u relative (halved by the root; kept whole), and the
      // double product's rounding.
      const std::vector<double> gm = d_mix.get();
      Cmp cm;
      for (int64_t s = 0; s < S; ++s) {
        double ss = 0;
        for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(X[s * width + i]) * X[s * width + i];
        const double r = 1.0 / std::sqrt(ss / static_cast<double>(width) + static_cast<double>(norm_eps));
        for (int64_t i = 0; i < mix; ++i) {
          double sum = 0, a = 0;
          for (int j = 0; j < hc; ++j) {
            sum += part[(s * hc + j) * mix + i];
            a += std::fabs(part[(s * hc + j) * mix + i]);
          }
          const double want = sum * r;
          const double t = (static_cast<double>(hc + 1) * kU * a + static_cast<double>(width + 2) * kU * std::fabs(sum)) * r +
                           0x1p-50 * std::fabs(want);
          const double got = gm[static_cast<size_t>(s * mix + i)];
          ++cm.n;
          if (!std::isfinite(got)) {
            ++cm.nonfinite;
            continue;
          }
          const double e = std::fabs(got - want) / (t + 1e-300);
          cm.worst = std::max(cm.worst, e);
          cm.bad += e > 1.0;
        }
      }
      check(cm, "hc_pre_collapse mixes");
    }
}

// ============================ router ===========================================================

double softplus(double z) { return z > 20.0 ? z : std::log1p(std::exp(z)); }

struct RouterCase {
  int E, K;
  int64_t D, S;
  bool hash, norm;
  float scale;
};

// moe.cpp's router for one token: ids (−1 for a repeated hash id) and weights; `gap_ok` is false
// when two of the first K+1 ordered candidates are within the scores' f32 error of each other
// (then the selection or its order may legitimately differ).
struct Routed {
  std::vector<int32_t> ids;
  std::vector<double> w;
  std::vector<double> score, dscore;
  bool gap_ok = true;
};
Routed route_ref(const RouterCase& c, const std::vector<float>& gate, const std::vector<float>& bias,
                 const std::vector<int32_t>& tid2eid, int cols, const float* x, int32_t token) {
  Routed o;
  o.score.resize(static_cast<size_t>(c.E));
  o.dscore.resize(static_cast<size_t>(c.E));
  for (int e = 0; e < c.E; ++e) {
    const double z = cpu::dot(x, gate.data() + e * c.D, c.D);
    o.score[e] = std::sqrt(softplus(z));
    double a = 0;
    for (int64_t k = 0; k < c.D; ++k) a += std::fabs(static_cast<double>(x[k]) * gate[e * c.D + k]);
    // The f32 logit is within (D + 2)·u·Σ|x·g|; d sqrt(softplus(z))/dz = σ(z) / (2·sqrt(softplus(z))),
    // doubled for margin.
    const double sig = 1.0 / (1.0 + std::exp(-z));
    o.dscore[e] = 2.0 * static_cast<double>(c.D + 2) * kU * a * sig / (2.0 * o.score[e]);
  }
  std::vector<int32_t> chosen;
  if (c.hash) {
    const int32_t* row = tid2eid.data() + static_cast<int64_t>(token) * cols;
    for (int k = 0; k < c.K; ++k) {
      const bool dup = std::find(chosen.begin(), chosen.end(), row[k]) != chosen.end();
      o.ids.push_back(dup ? -1 : row[k]);
      if (!dup) chosen.push_back(row[k]);
    }
  } else {
    std::vector<int32_t> idx(static_cast<size_t>(c.E));
    std::iota(idx.begin(), idx.end(), 0);
    const int top = std::min(c.K + 1, c.E);
    std::partial_sort(idx.begin(), idx.begin() + top, idx.end(), [&](int32_t a, int32_t b) {
      const double va = o.score[a] + bias[a], vb = o.score[b] + bias[b];
      return va != vb ? va > vb : a < b;
    });
    for (int k = 0; k + 1 < top; ++k) {
      const double gap = (o.score[idx[k]] + bias[idx[k]]) - (o.score[idx[k + 1]] + bias[idx[k + 1]]);
      if (gap != 0.0 && gap <= o.dscore[idx[k]] + o.dscore[idx[k + 1]]) o.gap_ok = false;  // exact ties are exact
    }
    chosen.assign(idx.begin(), idx.begin() + c.K);
    o.ids = chosen;
  }
  double sum = 0;
  for (int32_t e : chosen) sum += o.score[e];
  for (int32_t e : o.ids)
    o.w.push_back(e < 0 ? 0.0 : (c.norm ? o.score[e] / sum : o.score[e]) * static_cast<double>(c.scale));
  return o;
}

struct RouterInputs {
  std::vector<float> gate, bias, x;
  std::vector<int32_t> tid2eid, tokens;
  int cols = 0, vocab = 30;
};

void run_router(const RouterCase& c, const RouterInputs& in, int64_t* ambiguous = nullptr) {
  CAPTURE(c.E, c.K, c.D, c.S, c.hash, c.norm, c.scale);
  DevBuf<float> d_gate(in.gate), d_bias(in.bias.empty() ? std::vector<float>(1) : in.bias), d_x(in.x),
      d_w(static_cast<size_t>(c.S * c.K));
  DevBuf<int32_t> d_t2e(in.tid2eid.empty() ? std::vector<int32_t>(1) : in.tid2eid),
      d_tok(in.tokens.empty() ? std::vector<int32_t>(1) : in.tokens), d_ids(static_cast<size_t>(c.S * c.K));
  d_w.poison();
  REQUIRE(cudaMemset(d_ids.p, 0x7f, d_ids.n * 4) == cudaSuccess);  // not a valid id, not −1
  dc::RouterParams p;
  p.gate = d_gate.p;
  p.bias = c.hash ? nullptr : d_bias.p;
  p.tid2eid = c.hash ? d_t2e.p : nullptr;
  p.tid2eid_cols = in.cols;
  p.E = c.E;
  p.K = c.K;
  p.D = c.D;
  p.norm_topk_prob = c.norm;
  p.routed_scale = c.scale;
  REQUIRE(dc::router(p, d_x.p, c.hash ? d_tok.p : nullptr, c.S, d_ids.p, d_w.p, nullptr) == cudaSuccess);
  const std::vector<int32_t> ids = d_ids.get();
  const std::vector<float> w = d_w.get();
  int64_t skipped = 0, id_mismatch = 0;
  Cmp cw;
  for (int64_t s = 0; s < c.S; ++s) {
    const Routed r = route_ref(c, in.gate, in.bias, in.tid2eid, in.cols, in.x.data() + s * c.D,
                               c.hash ? in.tokens[s] : 0);
    if (!r.gap_ok) {
      ++skipped;
      continue;
    }
    double sum = 0, dsum = 0;
    for (int32_t e : r.ids)
      if (e >= 0) {
        sum += r.score[e];
        dsum += r.dscore[e];
      }
    for (int k = 0; k < c.K; ++k) {
      id_mismatch += ids[s * c.K + k] != r.ids[k];
      const int32_t e = r.ids[k];
      const float want = static_cast<float>(r.w[k]);
      if (e < 0) {
        cw.add(w[s * c.K + k], want, 0.0);  // exactly 0
        continue;
      }
      // w = scale·score/Σ: the score's own error over Σ plus the share of Σ's error, and the
      // f32 rounding of the weight.
      const double t = c.norm ? c.scale * (r.dscore[e] / sum + r.score[e] * dsum / (sum * sum)) : c.scale * r.dscore[e];
      cw.add(w[s * c.K + k], want, t + 0x1p-23 * std::fabs(want));
    }
  }
  INFO("tokens with a near-tie among the first K+1 candidates (ids not compared): " << skipped);
  CHECK(id_mismatch == 0);
  CHECK(skipped < c.S);
  if (ambiguous) *ambiguous += skipped;
  check(cw, "router weights");
}

TEST_CASE("router matches moe.cpp's routing", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const RouterCase cases[] = {{40, 6, 200, 7, false, true, 1.5f},
                              {384, 16, 392, 3, false, false, 2.5f},
                              {256, 8, 96, 17, false, true, 1.0f},
                              {40, 6, 200, 7, true, true, 1.5f},
                              {40, 6, 200, 5, true, false, 2.5f}};
  for (const RouterCase& c : cases) {
    RouterInputs in;
    in.gate = randn(rng, static_cast<size_t>(c.E * c.D), 1.0f / std::sqrt(static_cast<float>(c.D)));
    in.bias = randn(rng, static_cast<size_t>(c.E), 0.1f);
    in.x = rand_rows(rng, c.S, c.D, true);
    if (c.hash) {
      in.cols = c.K + 3;
      in.tid2eid.resize(static_cast<size_t>(in.vocab * in.cols));
      std::uniform_int_distribution<int> pe(0, c.E - 1), pt(0, in.vocab - 1);
      for (int v = 0; v < in.vocab; ++v)
        for (int k = 0; k < in.cols; ++k) {
          int32_t& t = in.tid2eid[v * in.cols + k];
          t = pe(rng);
          if (v % 3 == 0 && k >= 2) t = in.tid2eid[v * in.cols + k - 2];  // repeated ids: later ones get −1
        }
      for (int64_t s = 0; s < c.S; ++s) in.tokens.push_back(s == 0 ? 0 : pt(rng));  // token 0 has repeats
    }
    run_router(c, in);
  }
}

TEST_CASE("router breaks an exact tie toward the lower expert id", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int E = 24;
  const int64_t D = 200, S = 3;
  // Experts 5 and 11 have identical gate rows and biases, hence bit-identical scores. With K = 4
  // the three experts with bias +50 come first and the tied pair competes for the last slot (5
  // must win); with K = 5 both are chosen, 5 before 11.
  for (int K : {4, 5}) {
    CAPTURE(K);
    RouterCase c{E, K, D, S, false, true, 1.0f};
    RouterInputs in;
    in.gate = randn(rng, static_cast<size_t>(E * D), 1.0f / std::sqrt(static_cast<float>(D)));
    std::copy_n(in.gate.begin() + 5 * D, D, in.gate.begin() + 11 * D);
    in.bias.assign(static_cast<size_t>(E), 0.0f);
    for (int e : {0, 7, 19}) in.bias[e] = 50.0f;
    in.bias[5] = in.bias[11] = 20.0f;
    in.x = rand_rows(rng, S, D, true);
    run_router(c, in);
    // And explicitly (run_router compared with the reference, which ties the same way):
    DevBuf<float> d_gate(in.gate), d_bias(in.bias), d_x(in.x), d_w(static_cast<size_t>(S * K));
    DevBuf<int32_t> d_ids(static_cast<size_t>(S * K));
    dc::RouterParams p;
    p.gate = d_gate.p;
    p.bias = d_bias.p;
    p.E = E;
    p.K = K;
    p.D = D;
    REQUIRE(dc::router(p, d_x.p, nullptr, S, d_ids.p, d_w.p, nullptr) == cudaSuccess);
    const std::vector<int32_t> ids = d_ids.get();
    const std::vector<float> w = d_w.get();
    for (int64_t s = 0; s < S; ++s) {
      CHECK(ids[s * K + 3] == 5);
      if (K == 4) CHECK(std::find(ids.begin() + s * K, ids.begin() + (s + 1) * K, 11) == ids.begin() + (s + 1) * K);
      if (K == 5) {
        CHECK(ids[s * K + 4] == 11);
        CHECK(same_bits(w[s * K + 3], w[s * K + 4]));
      }
    }
  }
}

// ============================ SwiGLU and combine ===============================================

TEST_CASE("swiglu matches run_expert's SwiGLU", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t rows = 7, I = 200;
  const float limit = 7.0f;
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  for (bool official : {false, true})
    for (bool clamp : {false, true})
      for (bool with_ids : {false, true})
        for (bool with_w : {false, true})
          for (bool alias : {false, true}) {
            CAPTURE(official, clamp, with_ids, with_w, alias);
            // Magnitudes 2^-3..2^3 with ×40 outliers: the clamp at 7 matters; bf16 values in official
            // numerics, as the GEMM outputs are.
            const std::vector<float> g = rand_rows(rng, rows, I, official), u = rand_rows(rng, rows, I, official);
            std::vector<int32_t> ids(static_cast<size_t>(rows), 3);
            ids[2] = ids[5] = -1;
            std::vector<float> wt(static_cast<size_t>(rows));
            for (auto& v : wt) v = wd(rng);
            DevBuf<float> d_g(g), d_u(u), d_w(wt), d_h(static_cast<size_t>(rows * I));
            DevBuf<int32_t> d_ids(ids);
            d_h.poison();
            float* h = alias ? d_g.p : d_h.p;
            REQUIRE(dc::swiglu(d_g.p, d_u.p, with_ids ? d_ids.p : nullptr, with_w ? d_w.p : nullptr, rows, I, limit,
                               clamp, official, h, nullptr) == cudaSuccess);
            const std::vector<float> got = alias ? d_g.get() : d_h.get();
            Cmp cmp;
            int64_t skipped_bad = 0;
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t i = 0; i < I; ++i) {
                const int64_t k = r * I + i;
                if (with_ids && ids[r] < 0) {
                  skipped_bad += alias ? !same_bits(got[k], g[k]) : !is_poison(got[k]);
                  continue;
                }
                float want;
                double t;
                if (official) {
                  float gv = g[k], uv = u[k];
                  if (clamp) {
                    gv = std::min(gv, limit);
                    uv = std::clamp(uv, -limit, limit);
                  }
                  const float sw = gv / (1.0f + std::exp(-gv)) * uv;
                  want = dsv4::round_bf16((with_w ? wt[r] : 1.0f) * sw);
                  // expf on the device is within 2 ulps: a few f32 ulps on w·sw before the rounding.
                  t = 0x1p-21 * std::fabs((with_w ? wt[r] : 1.0f) * sw);
                  t = bf16_tol(want, t);
                } else {
                  double gv = g[k], uv = u[k];
                  if (clamp) {
                    gv = std::min(gv, static_cast<double>(limit));
                    uv = std::clamp(uv, -static_cast<double>(limit), static_cast<double>(limit));
                  }
                  want = static_cast<float>(gv / (1.0 + std::exp(-gv)) * uv);
                  // double arithmetic on both sides (device exp within an ulp of libm's): equal after
                  // the f32 rounding or one f32 ulp apart.
                  t = 0x1p-23 * std::fabs(want);
                }
                cmp.add(got[k], want, t);
              }
            CHECK(skipped_bad == 0);
            check(cmp, "swiglu");
          }
}

// SwiGLU at the model's width and odd ones, separate g / u rows and the fused w1|w3 layout (gu_stride
// 2I), slot ids with skipped rows and routing weights, one row to a prefill-sized chunk: run once on
// 16-byte aligned arrays (the vector path where I % 4 == 0) and once on copies one float off
// alignment (the element path, the per-element code of the kernel it replaced): the two memcmp-
// identical, skipped rows still poison in both, and within the tolerance of run_expert's SwiGLU
// (device expf / exp against libm: not bit-comparable with the host).
TEST_CASE("swiglu's vector and element paths agree bit for bit at odd sizes", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float limit = 7.0f;
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  std::uniform_int_distribution<int> skip(0, 4);
  for (int64_t I : {2048, 1030, 203})
    for (int64_t rows : {1, 3, 300})
      for (bool fused : {false, true})
        for (bool official : {false, true}) {
          CAPTURE(I, rows, fused, official);
          const int64_t st = fused ? 2 * I : I;
          std::vector<float> gsrc = rand_rows(rng, rows, st, official), usrc = rand_rows(rng, rows, I, official);
          sprinkle_small(rng, gsrc);
          std::vector<int32_t> ids(static_cast<size_t>(rows));
          for (auto& e : ids) e = skip(rng) == 0 ? -1 : 5;
          ids[0] = 5;  // at least one computed row (one-row cases would otherwise skip it a fifth of the time)
          std::vector<float> wt(static_cast<size_t>(rows));
          for (auto& v : wt) v = wd(rng);
          std::vector<float> got[2];
          for (int shift : {0, 1}) {
            DevBuf<float> d_g(shifted(gsrc, shift)), d_u(shifted(usrc, shift)), d_w(wt),
                d_h(static_cast<size_t>(rows * I + shift));
            DevBuf<int32_t> d_ids(ids);
            d_h.poison();
            const float* g = d_g.p + shift;
            const float* u = fused ? g + I : d_u.p + shift;
            REQUIRE(dc::swiglu(g, u, d_ids.p, d_w.p, rows, I, limit, true, official, d_h.p + shift, nullptr,
                               fused ? st : 0) == cudaSuccess);
            const std::vector<float> h = d_h.get();
            got[shift].assign(h.begin() + shift, h.end());
          }
          CHECK(bytes_differ(got[0], got[1]) == 0);
          Cmp cmp;
          int64_t skipped_bad = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < I; ++i) {
              const float hv = got[0][r * I + i];
              if (ids[r] < 0) {
                skipped_bad += !is_poison(hv);
                continue;
              }
              const float g = gsrc[r * st + i], u = fused ? gsrc[r * st + I + i] : usrc[r * I + i];
              if (official) {
                const float gv = std::min(g, limit), uv = std::clamp(u, -limit, limit);
                const float sw = gv / (1.0f + std::exp(-gv)) * uv;
                const float want = dsv4::round_bf16(wt[r] * sw);
                cmp.add(hv, want, bf16_tol(want, 0x1p-21 * std::fabs(wt[r] * sw)));  // as the test above
              } else {
                const double gv = std::min(static_cast<double>(g), static_cast<double>(limit));
                const double uv = std::clamp(static_cast<double>(u), -static_cast<double>(limit), static_cast<double>(limit));
                const float want = static_cast<float>(gv / (1.0 + std::exp(-gv)) * uv);
                cmp.add(hv, want, 0x1p-23 * std::fabs(want));
              }
            }
          CHECK(skipped_bad == 0);
          check(cmp, "swiglu");
        }
}

TEST_CASE("moe_combine sums the slots in ascending expert id, shared last", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t S = 6, D = 200;
  const int K = 6, E = 40;
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  for (bool official : {false, true}) {
    CAPTURE(official);
    // Distinct ids per token in random slot order; token 1 has two unused slots, token 4 one
    // valid slot, token 5 none (only the shared expert).
    std::vector<int32_t> ids(static_cast<size_t>(S * K));
    std::vector<int32_t> perm(static_cast<size_t>(E));
    for (int64_t s = 0; s < S; ++s) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int k = 0; k < K; ++k) ids[s * K + k] = perm[k];
    }
    ids[1 * K + 1] = ids[1 * K + 4] = -1;
    for (int k = 1; k < K; ++k) ids[4 * K + k] = -1;
    for (int k = 0; k < K; ++k) ids[5 * K + k] = -1;
    std::vector<float> wt(static_cast<size_t>(S * K));
    for (auto& v : wt) v = wd(rng);
    const std::vector<float> ys = rand_rows(rng, S * K, D, official), ysh = rand_rows(rng, S, D, official);
    DevBuf<float> d_ys(ys), d_w(wt), d_sh(ysh), d_f(static_cast<size_t>(S * D));
    DevBuf<int32_t> d_ids(ids);
    d_f.poison();
    REQUIRE(dc::moe_combine(d_ys.p, d_ids.p, official ? nullptr : d_w.p, d_sh.p, S, K, D, official, d_f.p, nullptr) ==
            cudaSuccess);
    const std::vector<float> got = d_f.get();
    Cmp cmp;
    for (int64_t s = 0; s < S; ++s) {
      std::vector<int> order;
      for (int k = 0; k < K; ++k)
        if (ids[s * K + k] >= 0) order.push_back(k);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return ids[s * K + a] < ids[s * K + b]; });
      for (int64_t d = 0; d < D; ++d) {
        if (official) {
          // moe.cpp: acc_f (f32) += y in ascending expert id, shared last, one bf16 rounding:
          // the same f32 additions in the same order, so bit-identical.
          float acc = 0.0f;
          for (int k : order) acc += ys[(s * K + k) * D + d];
          acc += ysh[s * D + d];
          cmp.add(got[s * D + d], dsv4::round_bf16(acc), 0.0);
        } else {
          // moe.cpp's reference: double Σ w·y (+ shared); the kernel's f32 fused sum of ≤ K + 1
          // terms is within (K + 2)·u·Σ|terms|.
          double acc = 0, a = 0;
          for (int k : order) {
            acc += static_cast<double>(wt[s * K + k]) * ys[(s * K + k) * D + d];
            a += std::fabs(static_cast<double>(wt[s * K + k]) * ys[(s * K + k) * D + d]);
          }
          acc += ysh[s * D + d];
          a += std::fabs(ysh[s * D + d]);
          cmp.add(got[s * D + d], static_cast<float>(acc), static_cast<double>(K + 2) * kU * a);
        }
      }
    }
    check(cmp, "moe_combine", official);
  }
}

// moe_combine at the model's width and odd ones, one token to a prefill-sized chunk, K 6 and 10 (more
// slots than the kernel loads at once), slot rows in place or grouped (y_rows, a random permutation
// as the prefill MoE's grouping makes), random unused slots (a token may have none), on aligned
// arrays (the vector path where D % 4 == 0) and one float off (the element path), inputs with ±0
// and f32 subnormals: bit-identical in both numerics to a loop of moe.cpp's f32 operations in
// ascending expert id — official acc + y (weights applied before w2), reference fmaf(w, y, acc)
// (the host's fmaf is correctly rounded, as the device's FMA) — then + shared (official: bf16).
struct CombineCase {
  int64_t S, D;
  int K;
};

TEST_CASE("moe_combine is bit-identical to moe.cpp's sums at odd sizes on every path", "[gpu][dense][moe]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int E = 40;
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  std::uniform_int_distribution<int> unused(0, 5);
  for (const CombineCase c : {CombineCase{1, 4096, 6}, CombineCase{3, 4096, 10}, CombineCase{300, 4096, 6},
                              CombineCase{3, 1030, 6}, CombineCase{300, 1030, 10}, CombineCase{1, 203, 10},
                              CombineCase{300, 203, 6}, CombineCase{3, 1028, 6}})
    for (bool grouped : {false, true})
      for (bool official : {false, true})
        for (int shift : {0, 1}) {
          const int64_t S = c.S, D = c.D;
          const int K = c.K;
          CAPTURE(S, D, K, grouped, official, shift);
          std::vector<int32_t> ids(static_cast<size_t>(S * K)), perm(static_cast<size_t>(E));
          for (int64_t s = 0; s < S; ++s) {
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            for (int k = 0; k < K; ++k) ids[s * K + k] = unused(rng) == 0 ? -1 : perm[k];
          }
          if (S > 1)
            for (int k = 0; k < K; ++k) ids[(S - 1) * K + k] = -1;  // the last token: only the shared expert
          std::vector<int32_t> rows(static_cast<size_t>(S * K));
          std::iota(rows.begin(), rows.end(), 0);
          if (grouped) std::shuffle(rows.begin(), rows.end(), rng);
          std::vector<float> wt(static_cast<size_t>(S * K));
          for (auto& v : wt) v = wd(rng);
          std::vector<float> ys = rand_rows(rng, S * K, D, official), ysh = rand_rows(rng, S, D, official);
          sprinkle_small(rng, ys);
          sprinkle_small(rng, ysh);
          DevBuf<float> d_ys(shifted(ys, shift)), d_sh(shifted(ysh, shift)), d_w(wt),
              d_f(static_cast<size_t>(S * D + shift));
          DevBuf<int32_t> d_ids(ids), d_rows(rows);
          d_f.poison();
          REQUIRE(dc::moe_combine(d_ys.p + shift, d_ids.p, official ? nullptr : d_w.p, d_sh.p + shift, S, K, D,
                                  official, d_f.p + shift, nullptr, grouped ? d_rows.p : nullptr) == cudaSuccess);
          const std::vector<float> all = d_f.get();
          std::vector<float> want(static_cast<size_t>(shift), dsv4::bits_to_f32(0xffffffffu));
          for (int64_t s = 0; s < S; ++s) {
            std::vector<int> order;
            for (int k = 0; k < K; ++k)
              if (ids[s * K + k] >= 0) order.push_back(k);
            std::sort(order.begin(), order.end(), [&](int a, int b) { return ids[s * K + a] < ids[s * K + b]; });
            for (int64_t d = 0; d < D; ++d) {
              float acc = 0.0f;
              for (int k : order) {
                const float y = ys[static_cast<size_t>(rows[s * K + k]) * D + d];
                acc = official ? acc + y : std::fma(wt[s * K + k], y, acc);
              }
              acc += ysh[s * D + d];
              want.push_back(official ? dsv4::round_bf16(acc) : acc);
            }
          }
          CHECK(bytes_differ(all, want) == 0);
        }
}

// ============================ argument checks ==================================================

TEST_CASE("dense kernels reject bad arguments and accept empty work", "[gpu][dense]") {
  DevBuf<float> b(1 << 16);
  DevBuf<int32_t> bi(1 << 10);
  float* f = b.p;
  const cudaError_t inval = cudaErrorInvalidValue;

  dc::LinearArgs a;
  a.w.format = WeightFormat::fp4;
  a.w.out = 8;
  a.w.in = 64;
  a.w.data = reinterpret_cast<const uint8_t*>(f);
  a.w.scale = reinterpret_cast<const uint8_t*>(f);
  a.w.block_in = 32;
  a.w.scale_cols = 2;
  a.x = f;
  a.x_stride = 64;
  a.y = f + 4096;
  a.y_stride = 8;
  a.rows = 0;
  CHECK(dc::linear(a, nullptr) == cudaSuccess);  // empty
  a.rows = 1;
  dc::LinearArgs bad = a;
  bad.x = nullptr;
  CHECK(dc::linear(bad, nullptr) == inval);
  bad = a;
  bad.w.in = 63;  // fp4 needs pairs
  bad.x_stride = 63;
  CHECK(dc::linear(bad, nullptr) == inval);
  bad = a;
  bad.w.scale_cols = 1;  // too few scale blocks for in = 64
  CHECK(dc::linear(bad, nullptr) == inval);
  bad = a;
  bad.out_group = 3;  // 8 outputs are not whole groups of 3
  CHECK(dc::linear(bad, nullptr) == inval);
  bad = a;
  bad.y_stride = 7;
  CHECK(dc::linear(bad, nullptr) == inval);
  bad = a;
  bad.w.scale = nullptr;
  CHECK(dc::linear(bad, nullptr) == inval);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);

  CHECK(dc::embed(f, true, bi.p, 0, 16, 4, false, f, nullptr) == cudaSuccess);
  CHECK(dc::embed(nullptr, true, bi.p, 1, 16, 4, false, f, nullptr) == inval);
  CHECK(dc::embed(f, true, bi.p, 1, 16, 17, false, f, nullptr) == inval);
  CHECK(dc::rms_norm(f, 16, nullptr, 0, 16, 1e-6f, false, f, 16, nullptr) == cudaSuccess);
  CHECK(dc::rms_norm(f, 16, nullptr, 1, 0, 1e-6f, false, f, 16, nullptr) == inval);
  CHECK(dc::rms_norm(f, 8, nullptr, 2, 16, 1e-6f, false, f, 16, nullptr) == inval);
  CHECK(dc::head_rms_norm(nullptr, 1, 16, 1e-6f, true, nullptr) == inval);
  CHECK(dc::rope(f, 1, 64, 0, 63, f, 0, 1, false, false, nullptr) == inval);
  CHECK(dc::rope(f, 1, 64, 8, 64, f, 0, 1, false, false, nullptr) == inval);
  CHECK(dc::rope(f, 1, 64, 0, 64, f, 0, 0, false, false, nullptr) == inval);
  dc::HcParams hp;
  hp.fn = hp.base = hp.scale = f;
  hp.hc = 17;
  hp.D = 16;
  hp.sinkhorn_iters = 20;
  CHECK(dc::hc_pre(hp, f, 1, f, f, f, nullptr) == inval);
  CHECK(dc::hc_head(hp, f, 1, f, nullptr) == inval);
  hp.hc = 4;
  CHECK(dc::hc_pre(hp, f, 0, f, f, f, nullptr) == cudaSuccess);
  CHECK(dc::hc_post(hp, f, f, f, f, 1, f + 8, nullptr) == inval);  // X_new overlaps R
  dc::RouterParams rp;
  rp.gate = f;
  rp.E = 4;
  rp.K = 5;  // K > E
  rp.D = 16;
  CHECK(dc::router(rp, f, nullptr, 1, bi.p, f, nullptr) == inval);
  rp.K = 2;
  rp.tid2eid = bi.p;
  rp.tid2eid_cols = 2;
  CHECK(dc::router(rp, f, nullptr, 1, bi.p, f, nullptr) == inval);  // hash routing needs tokens
  CHECK(dc::swiglu(f, f, nullptr, nullptr, 1, 0, 7.0f, true, true, f, nullptr) == inval);
  CHECK(dc::moe_combine(f, bi.p, f, f, 1, 33, 16, true, f, nullptr) == inval);
  CHECK(dc::moe_combine(f, bi.p, nullptr, f, 1, 6, 16, false, f, nullptr) == inval);  // reference needs weights
  CHECK(dc::moe_combine(f, bi.p, nullptr, f, 0, 6, 16, false, f, nullptr) == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}

TEST_CASE("split hc_pre and fused norm / RoPE launchers reject bad arguments and accept empty work", "[gpu][dense]") {
  DevBuf<float> b(1 << 16);
  DevBuf<double> bd(1 << 10);
  float* f = b.p;
  double* m = bd.p;
  const cudaError_t inval = cudaErrorInvalidValue;

  dc::HcParams hp;
  hp.fn = hp.base = hp.scale = f;
  hp.hc = 4;
  hp.D = 16;
  hp.sinkhorn_iters = 20;
  hp.partials = f;
  CHECK(dc::hc_pre_collapse(hp, f, 0, f, m, nullptr) == cudaSuccess);
  CHECK(dc::hc_pre_collapse(hp, f, -1, f, m, nullptr) == inval);
  dc::HcParams bad = hp;
  bad.partials = nullptr;  // hc_pre_collapse needs the partial dots
  CHECK(dc::hc_pre_collapse(bad, f, 1, f, m, nullptr) == inval);
  CHECK(dc::hc_pre_collapse(hp, nullptr, 1, f, m, nullptr) == inval);
  CHECK(dc::hc_pre_collapse(hp, f, 1, nullptr, m, nullptr) == inval);
  CHECK(dc::hc_pre_collapse(hp, f, 1, f, nullptr, nullptr) == inval);
  bad = hp;
  bad.hc = 17;
  CHECK(dc::hc_pre_collapse(bad, f, 1, f, m, nullptr) == inval);
  bad = hp;
  bad.D = 0;
  CHECK(dc::hc_pre_collapse(bad, f, 1, f, m, nullptr) == inval);

  CHECK(dc::hc_pre_sinkhorn(hp, m, 0, f, f, nullptr) == cudaSuccess);
  CHECK(dc::hc_pre_sinkhorn(hp, m, -1, f, f, nullptr) == inval);
  CHECK(dc::hc_pre_sinkhorn(hp, nullptr, 1, f, f, nullptr) == inval);
  CHECK(dc::hc_pre_sinkhorn(hp, m, 1, nullptr, f, nullptr) == inval);
  CHECK(dc::hc_pre_sinkhorn(hp, m, 1, f, nullptr, nullptr) == inval);
  bad = hp;
  bad.hc = 0;
  CHECK(dc::hc_pre_sinkhorn(bad, m, 1, f, f, nullptr) == inval);
  bad.hc = 17;
  CHECK(dc::hc_pre_sinkhorn(bad, m, 1, f, f, nullptr, true) == inval);
  bad = hp;
  bad.base = nullptr;
  CHECK(dc::hc_pre_sinkhorn(bad, m, 1, f, f, nullptr) == inval);
  bad = hp;
  bad.sinkhorn_iters = -1;
  CHECK(dc::hc_pre_sinkhorn(bad, m, 1, f, f, nullptr) == inval);

  // head_rms_norm_rope(q, rows, n, eps, official, col, rd, inv_freq, p0, rows_per_position)
  for (bool off : {false, true}) {
    CAPTURE(off);
    CHECK(dc::head_rms_norm_rope(f, 0, 64, 1e-6f, off, 0, 64, f, 0, 1, nullptr) == cudaSuccess);
    CHECK(dc::head_rms_norm_rope(f, -1, 64, 1e-6f, off, 0, 64, f, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(nullptr, 1, 64, 1e-6f, off, 0, 64, f, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(f, 1, 0, 1e-6f, off, 0, 64, f, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, 0, 63, f, 0, 1, nullptr) == inval);  // odd rd
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, 0, 0, f, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, 8, 64, f, 0, 1, nullptr) == inval);  // col + rd > n
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, -2, 64, f, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, 0, 64, nullptr, 0, 1, nullptr) == inval);
    CHECK(dc::head_rms_norm_rope(f, 1, 64, 1e-6f, off, 0, 64, f, 0, 0, nullptr) == inval);  // rows per position

    // kv_norm_rope_fp8(x, x_stride, w, S, n, eps, official, col, rd, inv_freq, p0, out, out_stride)
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 0, 64, 1e-6f, off, 0, 64, f, 0, f, 64, nullptr) == cudaSuccess);
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, -1, 64, 1e-6f, off, 0, 64, f, 0, f, 64, nullptr) == inval);
    CHECK(dc::kv_norm_rope_fp8(nullptr, 64, f, 1, 64, 1e-6f, off, 0, 64, f, 0, f, 64, nullptr) == inval);
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 1, 64, 1e-6f, off, 0, 64, f, 0, nullptr, 64, nullptr) == inval);
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 1, 0, 1e-6f, off, 0, 64, f, 0, f, 64, nullptr) == inval);
    CHECK(dc::kv_norm_rope_fp8(f, 63, f, 1, 64, 1e-6f, off, 0, 64, f, 0, f, 64, nullptr) == inval);  // x_stride < n
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 1, 64, 1e-6f, off, 0, 64, f, 0, f, 60, nullptr) == inval);  // out_stride < n
    CHECK(dc::kv_norm_rope_fp8(f, 80, f, 1, 64, 1e-6f, off, 8, 64, f, 0, f, 80, nullptr) == inval);  // col + rd > n
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 1, 64, 1e-6f, off, 0, 63, f, 0, f, 64, nullptr) == inval);  // odd rd
    CHECK(dc::kv_norm_rope_fp8(f, 64, f, 1, 64, 1e-6f, off, 0, 64, nullptr, 0, f, 64, nullptr) == inval);
  }
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}

}  // namespace
