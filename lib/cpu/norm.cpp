// RMSNorm (spec §3.2.3) in f32 storage with a double sum of squares. The reference-f32 mode has no
// rounding to bf16, so [OFF]'s and [HF]'s placements of that rounding coincide there; official
// numerics round after the weight multiply, as [OFF] does.
#include <cmath>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/dtypes.hpp"

namespace dsv4::cpu {

void rms_norm(const float* x, const float* w, int64_t n, double eps, float* out, bool bf16_out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(w ? static_cast<double>(w[i]) * x[i] * r : x[i] * r);
    out[i] = bf16_out ? round_bf16(v) : v;
  }
}

}  // namespace dsv4::cpu
