// Small device helpers shared by the decode linears (linear_small.cu, linear_small_mma.cu): warp
// reductions, the streaming 16-byte weight load, and the clamped e4m3 code of one FP8 1×128
// activation value (spec §5.1, fp8_act_quant_dequant's formula). Header-only, no state.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dsv4/dtypes.hpp"

namespace dsv4::cuda::dev {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Max over the warp of non-negative values; a NaN operand is ignored (as the CPU scan).
__device__ __forceinline__ float warp_max_nonneg(float v) {
  for (int o = 16; o > 0; o >>= 1) {
    const float t = __shfl_xor_sync(0xffffffffu, v, o);
    v = t > v ? t : v;
  }
  return v;
}

// 16 bytes of weights that are read once: non-coherent, not kept in L1.
__device__ __forceinline__ uint4 ldg_stream(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The e4m3 code of activation v in a block of power-of-two scale s: v / s (exact) clamped to ±448.
__device__ __forceinline__ uint8_t fp8_act_code(float v, float s) {
  float q = v / s;
  q = q > 448.0f ? 448.0f : (q < -448.0f ? -448.0f : q);
  return f32_to_e4m3(q);
}

}  // namespace dsv4::cuda::dev
