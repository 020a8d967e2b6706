// Number formats of the DeepSeek-V4 checkpoint and of its inference arithmetic (spec §2.2, §5):
// bf16, fp16, FP8 e4m3fn, e8m0 (ue8m0 power-of-two scales) and FP4 e2m1 (two per byte, low nibble
// = even element). Every function is a pure bit-level conversion usable from host and device code.
// Encoders round to nearest, ties to even, and saturate to the largest finite value (the "satfinite"
// behaviour of the CUDA conversions); decoders are exact. No allocation, no state.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DSV4_HD __host__ __device__ __forceinline__
#else
#define DSV4_HD inline
#endif

namespace dsv4 {

DSV4_HD float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
DSV4_HD uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
DSV4_HD bool f32_isnan(float f) { return (f32_to_bits(f) & 0x7fffffffu) > 0x7f800000u; }

// Round a non-negative float below 2^23 to the nearest integer, ties to even (exact arithmetic).
DSV4_HD float round_half_even_small(float y) {
  float fl = static_cast<float>(static_cast<int32_t>(y));
  float frac = y - fl;
  if (frac > 0.5f) return fl + 1.0f;
  if (frac < 0.5f) return fl;
  return (static_cast<int32_t>(fl) & 1) ? fl + 1.0f : fl;
}

// ---- bf16 -------------------------------------------------------------------------------------
DSV4_HD float bf16_to_f32(uint16_t b) { return bits_to_f32(static_cast<uint32_t>(b) << 16); }
// Round to nearest even; NaN stays NaN (quiet, sign kept); overflow rounds to ±inf as IEEE does.
DSV4_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}
DSV4_HD float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- fp16 (decode only: checkpoints may carry F16 tensors) ----------------------------------
DSV4_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    float v = static_cast<float>(man) * (1.0f / 16777216.0f);  // man * 2^-24
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

// ---- e8m0: value 2^(e-127); 0xFF is NaN -------------------------------------------------------
DSV4_HD float e8m0_to_f32(uint8_t e) {
  if (e == 0xff) return bits_to_f32(0x7fc00000u);
  if (e == 0) return bits_to_f32(0x00400000u);  // 2^-127 is a float subnormal
  return bits_to_f32(static_cast<uint32_t>(e) << 23);
}
// Exact power of two 2^(e-127) as e8m0; `x` must be a positive power of two in [2^-127, 2^127].
DSV4_HD uint8_t f32_pow2_to_e8m0(float x) {
  uint32_t u = f32_to_bits(x);
  if (((u >> 23) & 0xffu) == 0) return 0;  // 2^-127 (subnormal)
  return static_cast<uint8_t>((u >> 23) & 0xffu);
}
// Spec §5.1 scale rule: s = 2^ceil(log2(v)) for v > 0 normal, from the exponent bits:
// E = exp(v) - 127 + (mantissa(v) != 0). Returns the e8m0 code of s.
DSV4_HD uint8_t e8m0_ceil_pow2(float v) {
  uint32_t u = f32_to_bits(v);
  uint32_t e = (u >> 23) & 0xffu;
  uint32_t m = u & 0x7fffffu;
  return static_cast<uint8_t>(e + (m != 0 ? 1u : 0u));
}

// ---- FP8 e4m3fn: bias 7, no inf, S.1111.111 = NaN, max finite 448 -----------------------------
DSV4_HD float e4m3_to_f32(uint8_t c) {
  uint32_t sign = c & 0x80u, exp = (c >> 3) & 0xfu, man = c & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) return bits_to_f32((sign << 24) | 0x7fc00000u);
  if (exp == 0)
    v = static_cast<float>(man) * 0.001953125f;  // man * 2^-9
  else
    v = bits_to_f32(((exp + 120u) << 23) | (man << 20));
  return sign ? -v : v;
}
DSV4_HD uint8_t f32_to_e4m3(float f) {
  uint32_t u = f32_to_bits(f);
  uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (f32_isnan(f)) return static_cast<uint8_t>(sign | 0x7f);
  float x = bits_to_f32(u & 0x7fffffffu);
  if (x >= 448.0f) return static_cast<uint8_t>(sign | 0x7e);  // saturate (inf included)
  if (x < 0.015625f) {                                         // below 2^-6: subnormal grid 2^-9
    float q = round_half_even_small(x * 512.0f);
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(q));  // q == 8 is the min normal
  }
  int32_t e = static_cast<int32_t>((f32_to_bits(x) >> 23) & 0xffu) - 127;  // -6..8
  float m = x * bits_to_f32(static_cast<uint32_t>(127 - e) << 23);          // [1, 2)
  float q = round_half_even_small((m - 1.0f) * 8.0f);
  if (q >= 8.0f) { q = 0.0f; e += 1; }
  uint32_t code = (static_cast<uint32_t>(e + 7) << 3) | static_cast<uint32_t>(q);
  if (code > 0x7e) code = 0x7e;
  return static_cast<uint8_t>(sign | code);
}

// ---- FP4 e2m1: bias 1; magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; code 8 is -0 --------------------
DSV4_HD float e2m1_to_f32(uint8_t code) {
  const uint8_t c = code & 0xf;
  const uint8_t mag = c & 0x7;
  // magnitude table as arithmetic so it is usable on the device without constant memory
  float v = (mag < 2) ? 0.5f * mag : static_cast<float>(1u << ((mag >> 1) - 1)) * (1.0f + 0.5f * (mag & 1));
  return (c & 0x8) ? -v : v;
}
// Round to nearest, ties to the even code (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4),
// saturate at ±6. NaN has no e2m1 code: it maps to +6 (documented choice; callers never feed NaN).
DSV4_HD uint8_t f32_to_e2m1(float f) {
  if (f32_isnan(f)) return 0x7;
  uint8_t sign = (f32_to_bits(f) >> 31) ? 0x8 : 0x0;
  float x = f < 0 ? -f : f;
  uint8_t c;
  if (x <= 0.25f) c = 0;
  else if (x < 0.75f) c = 1;
  else if (x <= 1.25f) c = 2;
  else if (x < 1.75f) c = 3;
  else if (x <= 2.5f) c = 4;
  else if (x < 3.5f) c = 5;
  else if (x <= 5.0f) c = 6;
  else c = 7;
  return static_cast<uint8_t>(sign | c);
}
// Packed pair access: byte k holds element 2k in bits 0..3 and element 2k+1 in bits 4..7.
DSV4_HD uint8_t fp4_get(const uint8_t* packed, int64_t i) {
  uint8_t b = packed[i >> 1];
  return (i & 1) ? static_cast<uint8_t>(b >> 4) : static_cast<uint8_t>(b & 0xf);
}
DSV4_HD uint8_t fp4_pack(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>((even & 0xf) | ((odd & 0xf) << 4));
}

// ---- Activation quantisation scale (spec §5.1) ----------------------------------------------
// For a block with absolute maximum `amax`: a = max(amax, 1e-4); v = a * fl32(1/448);
// s = 2^ceil(log2 v). Returns s's e8m0 code; the quantised value is e4m3(clamp(x / s, ±448)).
DSV4_HD uint8_t fp8_act_scale_e8m0(float amax) {
  float a = amax > 1e-4f ? amax : 1e-4f;
  return e8m0_ceil_pow2(a * (1.0f / 448.0f));
}
// FP4 simulation scale (spec §5.3): a = max(amax, 6*2^-126); s = 2^ceil(log2(a * fl32(1/6))).
DSV4_HD uint8_t fp4_act_scale_e8m0(float amax) {
  const float floor_amax = 6.0f * 1.1754943508222875e-38f;
  float a = amax > floor_amax ? amax : floor_amax;
  return e8m0_ceil_pow2(a * (1.0f / 6.0f));
}

}  // namespace dsv4
