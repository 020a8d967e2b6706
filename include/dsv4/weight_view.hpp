// A linear layer's weight W [out, in] in its checkpoint format, as a non-owning view usable from
// host and device code (spec §2.3): FP8 e4m3 with e8m0 scales per block_out × block_in (128×128),
// FP4 e2m1 two per byte (low nibble = even element) with e8m0 scales per 1 × block_in (32), BF16 or
// F32. One definition of the exact dequantisation for the CPU backend, the CUDA kernels and the
// tests: at(o, i) is exactly the value the checkpoint stores. Pointers are host or device memory
// depending on who built the view; the view never frees them.
#pragma once
#include <cstdint>

#include "dsv4/dtypes.hpp"

namespace dsv4 {

enum class WeightFormat : uint8_t { f32, bf16, fp8, fp4 };

struct WeightView {
  WeightFormat format = WeightFormat::f32;
  int64_t out = 0, in = 0;
  const uint8_t* data = nullptr;   // [out, in] elements (fp4: [out, in/2] bytes)
  const uint8_t* scale = nullptr;  // fp8: [ceil(out/block_out), scale_cols]; fp4: [out, scale_cols]
  int64_t scale_cols = 0;
  int block_out = 128, block_in = 128;  // fp4 uses block_in only (32)

  // Bytes of data / scales (the extent a copy of this weight needs).
  DSV4_HD int64_t data_bytes() const {
    switch (format) {
      case WeightFormat::f32: return out * in * 4;
      case WeightFormat::bf16: return out * in * 2;
      case WeightFormat::fp8: return out * in;
      case WeightFormat::fp4: return out * (in / 2);
    }
    return 0;
  }
  DSV4_HD int64_t scale_bytes() const {
    if (format == WeightFormat::fp8) return (out + block_out - 1) / block_out * scale_cols;
    if (format == WeightFormat::fp4) return out * scale_cols;
    return 0;
  }
  // Element (o, i), exactly dequantised.
  DSV4_HD float at(int64_t o, int64_t i) const {
    switch (format) {
      case WeightFormat::f32: {
        float v;
        const uint8_t* p = data + (o * in + i) * 4;
        std::memcpy(&v, p, 4);
        return v;
      }
      case WeightFormat::bf16: {
        const uint8_t* p = data + (o * in + i) * 2;
        return bf16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
      }
      case WeightFormat::fp8:
        return e4m3_to_f32(data[o * in + i]) * e8m0_to_f32(scale[(o / block_out) * scale_cols + i / block_in]);
      case WeightFormat::fp4:
        return e2m1_to_f32(fp4_get(data + o * (in / 2), i)) * e8m0_to_f32(scale[o * scale_cols + i / block_in]);
    }
    return 0.0f;
  }
  // Row o into dst[in] (exact).
  DSV4_HD void row(int64_t o, float* dst) const {
    for (int64_t i = 0; i < in; ++i) dst[i] = at(o, i);
  }
};

}  // namespace dsv4
