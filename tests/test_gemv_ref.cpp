// CPU tests of the GEMV reference (dsv4/cpu/gemv_ref.hpp) and of the load-time tile layouts
// (dsv4/cuda/gemv_layout.hpp): hand-computed cases for the §5.1/§5.4/§5.5 arithmetic, the exact
// FP4 -> e4m3 bit placement the kernels use, and relayout round trips at odd shapes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"
#include "dsv4/cpu/gemv_ref.hpp"
#include "dsv4/cuda/gemv_layout.hpp"
#include "dsv4/dtypes.hpp"

using namespace dsv4;

TEST_CASE("quantize_act_row follows the spec 5.1 scale rule", "[gemv_ref]") {
  // 130 values: block 0 has amax 448*2^-3 = 56 -> v = 0.125 -> s = 2^-3 exactly (no mantissa bump);
  // block 1 (2 values) has amax 1e-6 -> floored to 1e-4 -> s = 2^ceil(log2(1e-4/448)) = 2^-22.
  std::vector<uint16_t> x(130, f32_to_bf16(0.f));
  x[0] = f32_to_bf16(56.f);
  x[5] = f32_to_bf16(-1.5f);
  x[128] = f32_to_bf16(1e-6f);
  std::vector<uint8_t> q(130), s(2);
  cpu::quantize_act_row(x.data(), 130, q.data(), s.data());
  CHECK(e8m0_to_f32(s[0]) == std::ldexp(1.f, -3));
  CHECK(e4m3_to_f32(q[0]) == 448.f);
  CHECK(e4m3_to_f32(q[5]) == -12.f);
  CHECK(e8m0_to_f32(s[1]) == std::ldexp(1.f, -22));
  CHECK(std::fabs(e4m3_to_f32(q[128]) * std::ldexp(1.0, -22) - double(bf16_to_f32(x[128]))) < 1e-7);
  // amax 57 -> v slightly above 2^-3 -> s = 2^-2
  x[0] = f32_to_bf16(57.f);
  cpu::quantize_act_row(x.data(), 130, q.data(), s.data());
  CHECK(e8m0_to_f32(s[0]) == std::ldexp(1.f, -2));
}

TEST_CASE("fp8_linear_ref: hand-computed block-scaled product", "[gemv_ref]") {
  // n = 2, k = 3: x = [1, 2, -4] (amax 4 -> s = 2^-6 -> q = [64, 128, -256]).
  const uint16_t x[3] = {f32_to_bf16(1.f), f32_to_bf16(2.f), f32_to_bf16(-4.f)};
  const uint8_t w[6] = {f32_to_e4m3(1.f), f32_to_e4m3(0.5f), f32_to_e4m3(2.f),
                        f32_to_e4m3(-3.f), f32_to_e4m3(0.f), f32_to_e4m3(0.25f)};
  const uint8_t s[1] = {127 + 2};  // weight block scale 4
  double y[2], a[2];
  cpu::fp8_linear_ref(w, s, 2, 3, x, 1, y, a);
  CHECK(y[0] == 4.0 * (1 * 1 + 2 * 0.5 + -4 * 2));  // -24
  CHECK(y[1] == 4.0 * (-3 + 0 + -1));               // -16
  CHECK(a[0] == 4.0 * (1 + 1 + 8));
}

TEST_CASE("fp4_linear_ref: hand-computed per-32 scaled product", "[gemv_ref]") {
  // k = 64 (two scale groups), one output row. q = e4m3 1.0 everywhere, qs = 2^0.
  std::vector<uint8_t> q(64, f32_to_e4m3(1.f));
  const uint8_t qs[1] = {127};
  std::vector<uint8_t> w(32, 0);
  w[0] = fp4_pack(0x2, 0x7);   // k0 = 1, k1 = 6
  w[16] = fp4_pack(0x9, 0x0);  // k32 = -0.5, k33 = 0
  const uint8_t s[2] = {127 + 1, 127 - 1};  // group 0 x2, group 1 x0.5
  double y, a, mx;
  cpu::fp4_linear_ref(w.data(), s, 1, 64, q.data(), qs, &y, &a, &mx);
  CHECK(y == 2.0 * 7 - 0.25);
  CHECK(a == 2.0 * 7 + 0.25);
  CHECK(mx == 12.0);
}

TEST_CASE("FP4 codes placed into e4m3 bits are exact (x 2^-6)", "[gemv_ref]") {
  // The kernels' decode: low nibbles -> ((w<<4)&0x80808080)|((w<<2)&0x1c1c1c1c),
  // high nibbles -> (w&0x80808080)|((w>>2)&0x1c1c1c1c). Check every code in every byte lane.
  for (uint32_t lo = 0; lo < 16; ++lo)
    for (uint32_t hi = 0; hi < 16; ++hi)
      for (int lane = 0; lane < 4; ++lane) {
        const uint32_t w = ((hi << 4) | lo) << (8 * lane) | (0x5au << (8 * ((lane + 1) & 3)));
        const uint32_t a = ((w << 4) & 0x80808080u) | ((w << 2) & 0x1c1c1c1cu);
        const uint32_t b = (w & 0x80808080u) | ((w >> 2) & 0x1c1c1c1cu);
        const uint8_t ea = static_cast<uint8_t>(a >> (8 * lane)), eb = static_cast<uint8_t>(b >> (8 * lane));
        CHECK(e4m3_to_f32(ea) == e2m1_to_f32(static_cast<uint8_t>(lo)) * 0.015625f);
        CHECK(e4m3_to_f32(eb) == e2m1_to_f32(static_cast<uint8_t>(hi)) * 0.015625f);
      }
}

TEST_CASE("FP8 relayout round trip and fragment placement", "[gemv_ref][relayout]") {
  std::mt19937_64 rng(std::random_device{}());
  for (auto [n, k] : {std::pair<int64_t, int64_t>{300, 520}, {128, 128}, {1, 8}, {257, 136}}) {
    std::vector<uint8_t> w(static_cast<size_t>(n * k));
    for (auto& b : w) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> t(cuda::fp8_tiled_bytes(n, k), 0xcc), back(w.size(), 0);
    cuda::fp8_relayout(w.data(), n, k, t.data());
    cuda::fp8_relayout_inverse(t.data(), n, k, back.data());
    CHECK(back == w);
    // Zero padding: every byte of the tiled buffer is either a weight or 0.
    size_t nonzero = 0;
    for (uint8_t b : t) nonzero += b != 0;
    size_t wnz = 0;
    for (uint8_t b : w) wnz += b != 0;
    CHECK(nonzero == wnz);
  }
  // Documented placement: row 9 (rg 0, lane/4 = 1, upper half), k = 16 + 4*2 + 3 = 27 (ks 0)
  // is register a3 (j/4 = 3) byte 3 of lane 4*1 + 2 = 6 -> byte (0*32 + 6)*16 + 15.
  std::vector<uint8_t> w(128 * 128, 0), t(cuda::fp8_tiled_bytes(128, 128));
  w[9 * 128 + 27] = 0x42;
  cuda::fp8_relayout(w.data(), 128, 128, t.data());
  CHECK(t[6 * 16 + 15] == 0x42);
}

TEST_CASE("FP4 expert relayout round trip (w1|w3 and w2) at odd shapes", "[gemv_ref][relayout]") {
  std::mt19937_64 rng(std::random_device{}());
  for (auto [rows, k] : {std::pair<int64_t, int64_t>{200, 720}, {128, 256}, {3, 34}, {300, 200}}) {
    const int64_t kb = (k + 31) / 32;
    auto rnd = [&](size_t n) {
      std::vector<uint8_t> v(n);
      for (auto& b : v) b = static_cast<uint8_t>(rng());
      return v;
    };
    auto w1 = rnd(size_t(rows * k / 2)), w3 = rnd(size_t(rows * k / 2));
    auto s1 = rnd(size_t(rows * kb)), s3 = rnd(size_t(rows * kb));
    std::vector<uint8_t> t(cuda::fp4_w13_expert_bytes(rows, k));
    cuda::fp4_relayout_w13(w1.data(), s1.data(), w3.data(), s3.data(), rows, k, t.data());
    std::vector<uint8_t> b1(w1.size()), b3(w3.size()), c1(s1.size()), c3(s3.size());
    cuda::fp4_relayout_w13_inverse(t.data(), rows, k, b1.data(), c1.data(), b3.data(), c3.data());
    CHECK(b1 == w1);
    CHECK(b3 == w3);
    CHECK(c1 == s1);
    CHECK(c3 == s3);

    std::vector<uint8_t> t2(cuda::fp4_w2_expert_bytes(rows, k));
    cuda::fp4_relayout_w2(w1.data(), s1.data(), rows, k, t2.data());
    std::vector<uint8_t> b2(w1.size()), c2(s1.size());
    cuda::fp4_relayout_w2_inverse(t2.data(), rows, k, b2.data(), c2.data());
    CHECK(b2 == w1);
    CHECK(c2 == s1);
  }
  // Documented placement (w2, Ks = 8, inter = 512: KT = 2): row 24 (rg 1, lane/4 = 0, hi8 = 1),
  // k = 256 + 32*3 + 16 + 4*1 + 2 (kt = 1, ks = 3 -> q = 2*1 + 1 = 3, lane = 1, i = 2, high nibble):
  // piece (0*8 + 1)*2 + 1 = 3, byte ((0*4 + 1)*32 + 1)*16 + 14 in it; its scale (row 24, kblock32
  // 8 + 3) at byte 2048 + (0*16 + 8)*8 + 3 of the same piece.
  std::vector<uint8_t> w(128 * 256, 0), s(128 * 16, 127), t(cuda::fp4_w2_expert_bytes(128, 512));
  const int64_t kk = 256 + 32 * 3 + 16 + 4 + 2;
  w[24 * 256 + kk / 2] = static_cast<uint8_t>(0xb << (4 * (kk & 1)));
  s[24 * 16 + 8 + 3] = 130;
  cuda::fp4_relayout_w2(w.data(), s.data(), 128, 512, t.data());
  const size_t piece = size_t(3) * cuda::kFp4PieceBytes;
  CHECK(t[piece + ((0 * 4 + 1) * 32 + 1) * 16 + 14] == 0xb0);
  CHECK(t[piece + cuda::kFp4PieceCodeBytes + 8 * 8 + 3] == 130);
  CHECK(std::count(t.begin(), t.end(), uint8_t{0xb0}) == 1);
}

TEST_CASE("fp4_moe_ref: unused slots contribute nothing, repeats add up", "[gemv_ref]") {
  // One expert with hidden = inter = 32, all codes 1.0 (code 2), scales 2^0: g = u = sum(qx * sx).
  const int64_t H = 32, I = 32;
  std::vector<uint8_t> w(size_t(H * I / 2), fp4_pack(2, 2)), s(size_t(H), 127);
  std::vector<cpu::MoeExpertRef> ex = {{w.data(), s.data(), w.data(), s.data(), w.data(), s.data()}};
  std::vector<uint16_t> x(size_t(H), f32_to_bf16(0.0625f));  // sum = 2 -> g = u = 2
  const int32_t ids[4] = {0, -1, 0, 7};
  const float wt[4] = {1.f, 1.f, 0.5f, 1.f};
  auto r = cpu::fp4_moe_ref(ex, H, I, x.data(), 1, ids, wt, 4);
  const double silu2 = 2.0 / (1.0 + std::exp(-2.0));
  CHECK(r.h[0] == round_bf16(static_cast<float>(silu2 * 2)));
  CHECK(r.h[1 * I] == 0.f);  // invalid slot
  CHECK(r.h[2 * I] == round_bf16(static_cast<float>(0.5 * silu2 * 2)));
  CHECK(r.y_slot[3 * H] == 0.0);  // id 7 does not exist
  const float y0 = round_bf16(static_cast<float>(r.y_slot[0])), y2 = round_bf16(static_cast<float>(r.y_slot[2 * H]));
  CHECK(r.y[0] == double(y0 + y2));
}
