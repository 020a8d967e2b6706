// The device helpers of the GEMM path of the linear layer (contracts: lib/cuda/kernels.hpp section
// "gemm_kernels.cu"; the exactness argument: lib/cuda/gemm.hpp).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "dsv4/numerics.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

// One warp per (row, 128-column block): the FP8 1×128 activation quantisation of spec §5.1 (the
// formula of stage_input in dense_kernels.cu: amax of the block, e8m0 scale, e4m3 code, dequantised)
// then bf16 — exact, the dequantised value has 4 significant bits.
__global__ void rows_to_bf16_kernel(const float* x, int64_t x_stride, const int32_t* x_rows, int64_t rows, int64_t n,
                                    bool quant, uint16_t* out, int64_t out_stride) {
  const int64_t blocks = (n + 127) / 128;
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * blocks) return;  // whole warp
  const int64_t r = warp / blocks, b = (warp % blocks) * 128;
  const float* xr = x + (x_rows ? int64_t{x_rows[r]} : r) * x_stride;
  float v[4];
  float amax = 0.0f;
  for (int j = 0; j < 4; ++j) {
    const int64_t i = b + lane + 32 * j;
    v[j] = i < n ? xr[i] : 0.0f;
    const float a = fabsf(v[j]);
    amax = a > amax ? a : amax;
  }
  if (quant) {
    for (int o = 16; o > 0; o >>= 1) {
      const float t = __shfl_xor_sync(kFullMask, amax, o);
      amax = t > amax ? t : amax;
    }
    const float s = e8m0_to_f32(fp8_act_scale_e8m0(amax));
    for (int j = 0; j < 4; ++j) {
      float q = v[j] / s;  // exact: s is a power of two
      q = q > 448.0f ? 448.0f : (q < -448.0f ? -448.0f : q);
      v[j] = e4m3_to_f32(f32_to_e4m3(q)) * s;
    }
  }
  for (int j = 0; j < 4; ++j) {
    const int64_t i = b + lane + 32 * j;
    if (i < n) out[r * out_stride + i] = f32_to_bf16(v[j]);
  }
}

// Eight consecutive elements of one weight row per thread (in % 8 == 0 is checked by the launcher
// for the byte-wide loads; other widths take the element loop).
__global__ void weight_to_bf16_kernel(WeightView w, int64_t row0, int64_t rows, uint16_t* out) {
  const int64_t per_row = (w.in + 7) / 8;
  const int64_t n = rows * per_row;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / per_row, i0 = (t % per_row) * 8;
    const int64_t o = row0 + r;
    uint16_t* dst = out + r * w.in + i0;
    if (i0 + 8 <= w.in && w.in % 8 == 0 && w.format == WeightFormat::fp8 && w.block_in % 8 == 0) {
      const uint2 q = *reinterpret_cast<const uint2*>(w.data + o * w.in + i0);  // one scale block holds all 8
      const float s = e8m0_to_f32(w.scale[(o / w.block_out) * w.scale_cols + i0 / w.block_in]);
      const uint32_t c[2] = {q.x, q.y};
      uint16_t v[8];
      for (int j = 0; j < 8; ++j) v[j] = f32_to_bf16(e4m3_to_f32(static_cast<uint8_t>(c[j / 4] >> (8 * (j % 4)))) * s);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
    } else if (i0 + 8 <= w.in && w.in % 8 == 0 && w.format == WeightFormat::fp4 && w.block_in % 8 == 0) {
      const uint32_t c = *reinterpret_cast<const uint32_t*>(w.data + o * (w.in / 2) + i0 / 2);
      const float s = e8m0_to_f32(w.scale[o * w.scale_cols + i0 / w.block_in]);
      uint16_t v[8];
      for (int j = 0; j < 8; ++j) v[j] = f32_to_bf16(e2m1_to_f32(static_cast<uint8_t>((c >> (4 * j)) & 0xf)) * s);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
    } else {
      for (int64_t i = i0; i < i0 + 8 && i < w.in; ++i) dst[i - i0] = f32_to_bf16(w.at(o, i));
    }
  }
}

__global__ void round_rows_bf16_kernel(float* y, int64_t ld, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    float* p = y + (t / n) * ld + t % n;
    *p = round_bf16(*p);
  }
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (int64_t{1} << 20) ? b : (int64_t{1} << 20));
}


}  // namespace

cudaError_t rows_to_bf16(const float* x, int64_t x_stride, const int32_t* x_rows, int64_t rows, int64_t n, bool quant,
                         uint16_t* out, int64_t out_stride, cudaStream_t stream) {
  if (rows < 0 || n < 0) return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  if (!x || !out || x_stride < n || out_stride < n) return cudaErrorInvalidValue;
  const int64_t warps = rows * ((n + 127) / 128);
  const int64_t ctas = (warps * 32 + kThreads - 1) / kThreads;
  if (ctas > INT_MAX) return cudaErrorInvalidValue;
  rows_to_bf16_kernel<<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(x, x_stride, x_rows, rows, n, quant, out,
                                                                             out_stride);
  return cudaGetLastError();
}

cudaError_t weight_to_bf16(const WeightView& w, int64_t row0, int64_t rows, uint16_t* out, cudaStream_t stream) {
  if (rows < 0 || row0 < 0 || row0 + rows > w.out) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!w.data || !out || w.format == WeightFormat::f32) return cudaErrorInvalidValue;
  if ((w.format == WeightFormat::fp8 || w.format == WeightFormat::fp4) && !w.scale) return cudaErrorInvalidValue;
  if (w.format == WeightFormat::bf16) return cudaErrorInvalidValue;  // used in place, never converted
  if (reinterpret_cast<uintptr_t>(out) % 16 != 0 || reinterpret_cast<uintptr_t>(w.data) % 8 != 0)
    return cudaErrorInvalidValue;
  weight_to_bf16_kernel<<<grid_for(rows * ((w.in + 7) / 8)), kThreads, 0, stream>>>(w, row0, rows, out);
  return cudaGetLastError();
}

cudaError_t round_rows_bf16(float* y, int64_t ld, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows < 0 || n < 0 || ld < n) return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  if (!y) return cudaErrorInvalidValue;
  round_rows_bf16_kernel<<<grid_for(rows * n), kThreads, 0, stream>>>(y, ld, rows, n);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda
