// The official run's per-element numerics (spec §3.0, §5, §7.2) as header-only host/device
// functions: one definition for the CPU twin ("official" numerics of the CPU backend) and the CUDA
// kernels, so the two cannot drift. Values are f32 holding bf16-representable numbers where the
// official run stores bf16. No allocation, no state.
#pragma once
#include <cmath>
#include <cstdint>

#include "dsv4/dtypes.hpp"

namespace dsv4 {

// Which arithmetic a backend runs (LoadOptions::numerics).
//   reference: exactly dequantised weights, f32 storage, no activation quantisation, no bf16
//              rounding, no simulations (spec §7.3 "reference-f32"; matches the float64 fixtures).
//   official:  what DeepSeek's inference code computes: bf16 between ops, FP8 1×128 activation
//              quantisation before every FP8/FP4 linear, KV FP8 simulation (e4m3 version), indexer
//              Hadamard + FP4 simulation, bf16 indexer scores, MoE sum in f32 with one bf16 rounding.
enum class Numerics : uint8_t { reference, official };

DSV4_HD void round_bf16_n(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}

namespace detail {
// One block-scaled quantise-dequantise pass: per block of `block` elements s = e8m0(scale_code(amax)),
// x ← decode(encode(clamp(x/s, ±limit))) · s (x/s exact: s is a power of two), rounded to bf16 when
// asked.
template <typename ScaleCode, typename Encode, typename Decode>
DSV4_HD void block_qdq(float* x, int64_t n, int block, float limit, bool bf16, ScaleCode scale_code, Encode enc,
                       Decode dec) {
  for (int64_t b = 0; b < n; b += block) {
    const int64_t e = b + block < n ? b + block : n;
    float amax = 0.0f;
    for (int64_t i = b; i < e; ++i) amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;
    const float s = e8m0_to_f32(scale_code(amax));
    for (int64_t i = b; i < e; ++i) {
      float v = x[i] / s;
      v = v > limit ? limit : (v < -limit ? -limit : v);
      const float q = dec(enc(v)) * s;
      x[i] = bf16 ? round_bf16(q) : q;
    }
  }
}
}  // namespace detail

// §5.1: x[n] ← its FP8 1×`block` quantisation, dequantised (e4m3(clamp(x/s)) · s with the
// power-of-two scale of each block). The GEMM on these values with exactly dequantised weights is
// the FP8×FP8 GEMM up to the f32 accumulation order.
DSV4_HD void fp8_act_quant_dequant(float* x, int64_t n, int block = 128) {
  detail::block_qdq(x, n, block, 448.0f, false, fp8_act_scale_e8m0, f32_to_e4m3, e4m3_to_f32);
}

// §5.2: in-place FP8 simulation of KV non-rope dims, blocks of 64, result rounded to bf16.
DSV4_HD void fp8_simulate_bf16(float* x, int64_t n, int block = 64) {
  detail::block_qdq(x, n, block, 448.0f, true, fp8_act_scale_e8m0, f32_to_e4m3, e4m3_to_f32);
}

// §5.3: Sylvester Walsh–Hadamard of size n (a power of two: 128 in the released model, smaller in
// tiny test models) scaled by n^-1/2 (bf16 in, f32 arithmetic, bf16 out), as
// fast_hadamard_transform computes it (butterflies in f32, one scale at the end).
DSV4_HD void hadamard_bf16(float* x, int n) {
  for (int h = 1; h < n; h <<= 1)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int i = 0; i < n; ++i) x[i] = round_bf16(x[i] * scale);
}

// §5.3: FP4 simulation per 32-element block: s = 2^ceil(log2(max(amax, 6·2^-126)/6)),
// x ← bf16(e2m1(clamp(x/s, ±6)) · s).
DSV4_HD void fp4_simulate_bf16(float* x, int64_t n, int block = 32) {
  detail::block_qdq(x, n, block, 6.0f, true, fp4_act_scale_e8m0, f32_to_e2m1, e2m1_to_f32);
}

// §3.5.1 [OFF]: the per-head unweighted RMS norm in bf16 tensor arithmetic:
// s = bf16(mean_f32acc(bf16(q²))), r = bf16(rsqrt(bf16(s + eps))), q = bf16(q · r).
DSV4_HD void head_rms_norm_bf16(float* q, int64_t n, float eps) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += round_bf16(q[i] * q[i]);
  const float s = round_bf16(acc / static_cast<float>(n));
  const float r = round_bf16(1.0f / std::sqrt(round_bf16(s + eps)));
  for (int64_t i = 0; i < n; ++i) q[i] = round_bf16(q[i] * r);
}

}  // namespace dsv4
