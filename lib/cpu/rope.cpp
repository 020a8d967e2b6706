// Interleaved partial RoPE (spec §3.5.3): pairs (2i, 2i+1) of the rope slice rotated by
// θ = f32(p) · f_i. The angle is the f32 product, as both reference implementations compute it
// (at large positions its rounding dominates); cos/sin are then taken of that f32 angle.
#include <cmath>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/dtypes.hpp"

namespace dsv4::cpu {

void RopeTable::apply(float* v, int64_t p, bool inverse, bool bf16_out) const {
  const float pf = static_cast<float>(p);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float theta = pf * inv_freq[i];
    const double c = std::cos(static_cast<double>(theta));
    const double s = inverse ? -std::sin(static_cast<double>(theta)) : std::sin(static_cast<double>(theta));
    const double a = v[2 * i], b = v[2 * i + 1];
    v[2 * i] = static_cast<float>(a * c - b * s);
    v[2 * i + 1] = static_cast<float>(a * s + b * c);
    if (bf16_out) {
      v[2 * i] = round_bf16(v[2 * i]);
      v[2 * i + 1] = round_bf16(v[2 * i + 1]);
    }
  }
}

}  // namespace dsv4::cpu
