// RMSNorm (spec §3.2.3) in f32 storage with a double sum of squares. The reference-f32 mode has no
// rounding to bf16, so [OFF]'s and [HF]'s placements of that rounding coincide here.
#include <cmath>

#include "dsv4/cpu/ops.hpp"

namespace dsv4::cpu {

void rms_norm(const float* x, const float* w, int64_t n, double eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(w ? static_cast<double>(w[i]) * x[i] * r : x[i] * r);
}

}  // namespace dsv4::cpu
