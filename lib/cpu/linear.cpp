// Dot products and the linear layer of the CPU reference backend. Accumulation is in double
// (four independent partial sums for instruction-level parallelism): the reference is compared
// with a float64 oracle, and f32 sums over thousands of terms would eat into the 1e-3 budget.
#include <algorithm>
#include <vector>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {

double dot(const float* a, const float* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += static_cast<double>(a[i]) * b[i];
    s1 += static_cast<double>(a[i + 1]) * b[i + 1];
    s2 += static_cast<double>(a[i + 2]) * b[i + 2];
    s3 += static_cast<double>(a[i + 3]) * b[i + 3];
  }
  for (; i < n; ++i) s0 += static_cast<double>(a[i]) * b[i];
  return (s0 + s1) + (s2 + s3);
}

void linear(const Linear& w, const float* x, int64_t S, float* y, ThreadPool& pool, LinearOut mode) {
  const int64_t out = w.out, in = w.in;
  if (S == 0) return;  // e.g. the head during a prefill chunk that wants no logits: no dequantising
  std::vector<float> xq;
  if (mode == LinearOut::fp8_bf16) {
    // FP8 1×128 activation quantisation (spec §5.1); with exactly dequantised weights the double
    // sum below is the FP8 GEMM of §5.4 / §5.5 up to accumulation order.
    xq.assign(x, x + S * in);
    for (int64_t s = 0; s < S; ++s) fp8_act_quant_dequant(xq.data() + s * in, in);
    x = xq.data();
  }
  const bool bf16 = mode != LinearOut::f32;
  // Each output row is dequantised once per call and reused for all S inputs.
  pool.parallel_for(out, 16, [&](int64_t b, int64_t e) {
    std::vector<float> buf(w.dense.empty() ? static_cast<size_t>(in) : 0);
    for (int64_t o = b; o < e; ++o) {
      const float* r = w.row(o, buf.data());
      for (int64_t s = 0; s < S; ++s) {
        const float v = static_cast<float>(dot(x + s * in, r, in));
        y[s * out + o] = bf16 ? round_bf16(v) : v;
      }
    }
  });
}

}  // namespace dsv4::cpu
