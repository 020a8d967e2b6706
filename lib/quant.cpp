// CPU dequantisation and checkpoint-format quantisers (contract in include/dsv4/quant.hpp).
#include "dsv4/quant.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "dsv4/dtypes.hpp"
#include "dsv4/error.hpp"

namespace dsv4 {
namespace {
// All 256 e4m3 codes decoded once (immutable after the thread-safe first use).
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int c = 0; c < 256; ++c) v[static_cast<size_t>(c)] = e4m3_to_f32(static_cast<uint8_t>(c));
    return v;
  }();
  return t;
}
void expect_2d(const TensorView& t, DType dt, int64_t rows, int64_t cols) {
  if (t.dtype != dt || t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
    fail(Status::format, "tensor '{}': {} {} (expected {} [{}, {}])", t.name, dtype_name(t.dtype), t.shape_str(), dtype_name(dt), rows, cols);
}
}  // namespace

void decode_bf16_row(const uint8_t* src, int64_t in, float* dst) {
  for (int64_t i = 0; i < in; ++i) {
    uint16_t b;
    std::memcpy(&b, src + 2 * i, 2);
    dst[i] = bf16_to_f32(b);
  }
}

void dequant_fp8_row(const uint8_t* codes, const uint8_t* scales, int64_t in, int block_in, float* dst) {
  const auto& lut = e4m3_table();
  for (int64_t b0 = 0; b0 < in; b0 += block_in) {
    const float sc = e8m0_to_f32(scales[b0 / block_in]);
    const int64_t e = std::min<int64_t>(in, b0 + block_in);
    for (int64_t i = b0; i < e; ++i) dst[i] = lut[codes[i]] * sc;
  }
}

void dequant_fp4_row(const uint8_t* packed, const uint8_t* scales, int64_t in, int block, float* dst) {
  for (int64_t b0 = 0; b0 < in; b0 += block) {
    const float sc = e8m0_to_f32(scales[b0 / block]);
    float v[16];
    for (int c = 0; c < 16; ++c) v[c] = e2m1_to_f32(static_cast<uint8_t>(c)) * sc;
    const int64_t e = std::min<int64_t>(in, b0 + block);
    for (int64_t i = b0; i < e; i += 2) {  // block is even: whole bytes
      const uint8_t byte = packed[i / 2];
      dst[i] = v[byte & 15];
      if (i + 1 < e) dst[i + 1] = v[byte >> 4];
    }
  }
}

std::vector<float> to_f32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
      break;
    case DType::BF16:
      decode_bf16_row(p, n, out.data());
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[static_cast<size_t>(i)] = f16_to_f32(b);
      }
      break;
    default:
      fail(Status::format, "tensor '{}': dtype {} is not a float type (expected BF16, F16 or F32)", t.name, dtype_name(t.dtype));
  }
  return out;
}

std::vector<int32_t> to_i32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t v;
    if (t.dtype == DType::I64) {
      std::memcpy(&v, t.data + 8 * i, 8);
    } else if (t.dtype == DType::I32) {
      int32_t v32;
      std::memcpy(&v32, t.data + 4 * i, 4);
      v = v32;
    } else {
      fail(Status::format, "tensor '{}': dtype {} (expected I64 or I32)", t.name, dtype_name(t.dtype));
    }
    if (v < INT32_MIN || v > INT32_MAX) fail(Status::format, "tensor '{}': value {} at {} out of int32 range", t.name, v, i);
    out[static_cast<size_t>(i)] = static_cast<int32_t>(v);
  }
  return out;
}

std::vector<float> dequant_fp8(const TensorView& w, const TensorView& s, int bo, int bi) {
  if (w.shape.size() != 2) fail(Status::format, "tensor '{}': FP8 weight must be 2-D, got {}", w.name, w.shape_str());
  const int64_t out = w.shape[0], in = w.shape[1];
  expect_2d(w, DType::F8_E4M3, out, in);
  expect_2d(s, DType::F8_E8M0, ceil_div(out, bo), ceil_div(in, bi));
  std::vector<float> r(static_cast<size_t>(out * in));
  const int64_t sc = s.shape[1];
  for (int64_t o = 0; o < out; ++o) dequant_fp8_row(w.data + o * in, s.data + (o / bo) * sc, in, bi, r.data() + o * in);
  return r;
}

std::vector<float> dequant_fp4(const TensorView& w, const TensorView& s, int blk) {
  if (w.shape.size() != 2) fail(Status::format, "tensor '{}': FP4 weight must be 2-D, got {}", w.name, w.shape_str());
  const int64_t out = w.shape[0], in = w.shape[1] * 2;
  expect_2d(w, DType::I8, out, in / 2);
  expect_2d(s, DType::F8_E8M0, out, ceil_div(in, blk));
  std::vector<float> r(static_cast<size_t>(out * in));
  const int64_t sc = s.shape[1];
  for (int64_t o = 0; o < out; ++o) dequant_fp4_row(w.data + o * (in / 2), s.data + o * sc, in, blk, r.data() + o * in);
  return r;
}

Fp8Quantized quantize_fp8_block(const float* w, int64_t out, int64_t in, int bo, int bi) {
  const int64_t so = ceil_div(out, bo), si = ceil_div(in, bi);
  Fp8Quantized q;
  q.codes.resize(static_cast<size_t>(out * in));
  q.scales.resize(static_cast<size_t>(so * si));
  for (int64_t br = 0; br < so; ++br)
    for (int64_t bc = 0; bc < si; ++bc) {
      float amax = 0;
      for (int64_t o = br * bo; o < std::min(out, (br + 1) * bo); ++o)
        for (int64_t i = bc * bi; i < std::min(in, (bc + 1) * bi); ++i) amax = std::max(amax, std::fabs(w[o * in + i]));
      const uint8_t e = e8m0_ceil_pow2(std::max(amax, 1e-30f) / 448.0f);
      q.scales[static_cast<size_t>(br * si + bc)] = e;
      const float inv = 1.0f / e8m0_to_f32(e);
      for (int64_t o = br * bo; o < std::min(out, (br + 1) * bo); ++o)
        for (int64_t i = bc * bi; i < std::min(in, (bc + 1) * bi); ++i)
          q.codes[static_cast<size_t>(o * in + i)] = f32_to_e4m3(w[o * in + i] * inv);
    }
  return q;
}

Fp4Quantized quantize_fp4_block(const float* w, int64_t out, int64_t in, int blk) {
  if (in % 2) fail(Status::invalid_argument, "quantize_fp4_block: input width {} must be even", in);
  const int64_t sc = ceil_div(in, blk);
  Fp4Quantized q;
  q.packed.assign(static_cast<size_t>(out * in / 2), 0);
  q.scales.resize(static_cast<size_t>(out * sc));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t b = 0; b < sc; ++b) {
      float amax = 0;
      for (int64_t i = b * blk; i < std::min(in, (b + 1) * blk); ++i) amax = std::max(amax, std::fabs(w[o * in + i]));
      const uint8_t e = e8m0_ceil_pow2(std::max(amax, 1e-30f) / 6.0f);
      q.scales[static_cast<size_t>(o * sc + b)] = e;
      const float inv = 1.0f / e8m0_to_f32(e);
      for (int64_t i = b * blk; i < std::min(in, (b + 1) * blk); ++i) {
        uint8_t code = f32_to_e2m1(w[o * in + i] * inv);
        uint8_t& byte = q.packed[static_cast<size_t>((o * in + i) / 2)];
        byte = static_cast<uint8_t>((i & 1) ? (byte | (code << 4)) : (byte | code));
      }
    }
  return q;
}

}  // namespace dsv4
