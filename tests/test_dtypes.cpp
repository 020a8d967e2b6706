// Number formats (spec §2.2, §5): exhaustive decode tables, encode round trips, RNE ties,
// saturation and NaN handling. Expected values are computed independently from the format
// definitions (sign/exponent/mantissa fields with ldexp), not from the functions under test.
#include <cmath>
#include <cstdint>

#include "catch.hpp"
#include "dsv4/dtypes.hpp"

using namespace dsv4;

static double e4m3_reference(int c) {
  int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return NAN;
  double v = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -v : v;
}

TEST_CASE("e4m3 decode matches the format definition on all 256 codes", "[dtypes]") {
  for (int c = 0; c < 256; ++c) {
    double ref = e4m3_reference(c);
    float got = e4m3_to_f32(static_cast<uint8_t>(c));
    INFO("code " << c);
    if (std::isnan(ref)) {
      CHECK(std::isnan(got));
    } else {
      CHECK(static_cast<double>(got) == ref);
      CHECK(std::signbit(got) == static_cast<bool>(c & 0x80));
    }
  }
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));
}

TEST_CASE("e4m3 encode round-trips every finite code and rounds ties to even", "[dtypes]") {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    CHECK(f32_to_e4m3(e4m3_to_f32(static_cast<uint8_t>(c))) == c);
  }
  // Midpoints between consecutive positive codes go to the code with an even mantissa.
  for (int c = 0; c < 0x7e; ++c) {
    float lo = e4m3_to_f32(static_cast<uint8_t>(c)), hi = e4m3_to_f32(static_cast<uint8_t>(c + 1));
    float mid = 0.5f * (lo + hi);
    int want = (c & 1) ? c + 1 : c;
    INFO("between codes " << c << " and " << c + 1);
    CHECK(f32_to_e4m3(mid) == want);
    CHECK(f32_to_e4m3(std::nextafter(mid, hi)) == c + 1);
    CHECK(f32_to_e4m3(std::nextafter(mid, lo)) == c);
    CHECK(f32_to_e4m3(-mid) == (want | 0x80));
  }
  // Saturation (satfinite): beyond 448, infinities included; NaN stays NaN.
  CHECK(f32_to_e4m3(449.0f) == 0x7e);
  CHECK(f32_to_e4m3(1e30f) == 0x7e);
  CHECK(f32_to_e4m3(INFINITY) == 0x7e);
  CHECK(f32_to_e4m3(-INFINITY) == 0xfe);
  CHECK((f32_to_e4m3(NAN) & 0x7f) == 0x7f);
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -11)) == 0x00);  // a quarter of the smallest subnormal
  CHECK(f32_to_e4m3(std::ldexp(3.0f, -11)) == 0x01);  // 0.75 of it rounds up
}

TEST_CASE("e2m1 decode, encode, ties and saturation", "[dtypes]") {
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 16; ++c) {
    float want = (c & 8) ? -mags[c & 7] : mags[c & 7];
    CHECK(e2m1_to_f32(static_cast<uint8_t>(c)) == want);
    CHECK(f32_to_e2m1(want) == ((c == 8) ? 8 : c));
  }
  struct Tie { float x; float want; };
  const Tie ties[] = {{0.25f, 0}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2}, {3.5f, 4}, {5.0f, 4},
                      {0.26f, 0.5f}, {5.01f, 6}, {7.0f, 6}, {1e9f, 6}};
  for (auto t : ties) {
    INFO("x = " << t.x);
    CHECK(e2m1_to_f32(f32_to_e2m1(t.x)) == t.want);
    CHECK(e2m1_to_f32(f32_to_e2m1(-t.x)) == -t.want);
  }
  CHECK(e2m1_to_f32(f32_to_e2m1(INFINITY)) == 6.0f);
  uint8_t packed[2] = {fp4_pack(0x3, 0xA), fp4_pack(0x7, 0x1)};
  CHECK(packed[0] == 0xA3);
  CHECK(fp4_get(packed, 0) == 0x3);
  CHECK(fp4_get(packed, 1) == 0xA);
  CHECK(fp4_get(packed, 2) == 0x7);
  CHECK(fp4_get(packed, 3) == 0x1);
}

TEST_CASE("e8m0 decode and power-of-two scale rule", "[dtypes]") {
  for (int e = 0; e < 255; ++e) CHECK(static_cast<double>(e8m0_to_f32(static_cast<uint8_t>(e))) == std::ldexp(1.0, e - 127));
  CHECK(std::isnan(e8m0_to_f32(0xff)));
  for (int e = 1; e < 255; ++e) CHECK(f32_pow2_to_e8m0(std::ldexp(1.0f, e - 127)) == e);
  // s = 2^ceil(log2(amax / 448)) with the 1e-4 floor (spec §5.1)
  CHECK(e8m0_to_f32(fp8_act_scale_e8m0(448.0f)) == 1.0f);
  CHECK(e8m0_to_f32(fp8_act_scale_e8m0(449.0f)) == 2.0f);
  CHECK(e8m0_to_f32(fp8_act_scale_e8m0(224.0f)) == 0.5f);
  CHECK(e8m0_to_f32(fp8_act_scale_e8m0(0.0f)) == std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(1e-4f / 448.0f)))));
  CHECK(e8m0_to_f32(fp4_act_scale_e8m0(6.0f)) == 1.0f);
  CHECK(e8m0_to_f32(fp4_act_scale_e8m0(6.5f)) == 2.0f);
}

TEST_CASE("bf16 round to nearest even, NaN and overflow", "[dtypes]") {
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(f)) { CHECK(std::isnan(bf16_to_f32(f32_to_bf16(f)))); continue; }
    CHECK(f32_to_bf16(f) == b);
  }
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);                          // tie to even (down)
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);                      // tie to even (up)
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);  // above tie
  CHECK(f32_to_bf16(3.4e38f) == 0x7f80);                                               // overflow → inf
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0xfbff) == -65504.0f);
}
