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

// 16 consecutive elements of one weight row per thread: blockIdx.y = row (no 64-bit division on
// the hot path), one 16-byte FP8 / 8-byte FP4 load, two 16-byte stores. The vector path needs
// in % 16 == 0 and a block_in that 16 divides (so one scale covers all 16); other shapes take the
// element loop (exact either way: w.at's value, bf16-representable).
constexpr int kDeqElems = 16;
__global__ void weight_to_bf16_kernel(WeightView w, int64_t row0, uint16_t* out, bool vec) {
  const int64_t r = blockIdx.y + int64_t{65535} * blockIdx.z;
  const int64_t o = row0 + r;
  const int64_t i0 = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * kDeqElems;
  if (i0 >= w.in) return;
  uint16_t* dst = out + r * w.in + i0;
  if (vec && w.format == WeightFormat::fp8) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(w.data + o * w.in + i0));
    const float s = e8m0_to_f32(w.scale[(o / w.block_out) * w.scale_cols + i0 / w.block_in]);
    const uint32_t c[4] = {q.x, q.y, q.z, q.w};
    uint32_t v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = c[j / 2] >> (16 * (j % 2));
      const uint16_t lo = f32_to_bf16(e4m3_to_f32(static_cast<uint8_t>(b & 0xff)) * s);
      const uint16_t hi = f32_to_bf16(e4m3_to_f32(static_cast<uint8_t>((b >> 8) & 0xff)) * s);
      v[j] = lo | (uint32_t{hi} << 16);
    }
    reinterpret_cast<uint4*>(dst)[0] = make_uint4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<uint4*>(dst)[1] = make_uint4(v[4], v[5], v[6], v[7]);
  } else if (vec && w.format == WeightFormat::fp4) {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(w.data + o * (w.in / 2) + i0 / 2));
    const float s = e8m0_to_f32(w.scale[o * w.scale_cols + i0 / w.block_in]);
    const uint32_t c[2] = {q.x, q.y};
    uint32_t v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = c[j / 4] >> (8 * (j % 4));
      const uint16_t lo = f32_to_bf16(e2m1_to_f32(static_cast<uint8_t>(b & 0xf)) * s);
      const uint16_t hi = f32_to_bf16(e2m1_to_f32(static_cast<uint8_t>((b >> 4) & 0xf)) * s);
      v[j] = lo | (uint32_t{hi} << 16);
    }
    reinterpret_cast<uint4*>(dst)[0] = make_uint4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<uint4*>(dst)[1] = make_uint4(v[4], v[5], v[6], v[7]);
  } else {
    for (int64_t i = i0; i < i0 + kDeqElems && i < w.in; ++i) dst[i - i0] = f32_to_bf16(w.at(o, i));
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

// The exact three-way bf16 split of an f32 weight: hi = bf16(w), mid = bf16(w − hi),
// lo = w − hi − mid (each difference exact in f32; lo has at most 8 significant bits).
__global__ void split3_kernel(const float* w, int64_t n, uint16_t* hi, uint16_t* mid, uint16_t* lo) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const float v = w[t];
    const uint16_t h = f32_to_bf16(v);
    const float r1 = v - bf16_to_f32(h);
    const uint16_t m = f32_to_bf16(r1);
    hi[t] = h;
    mid[t] = m;
    lo[t] = f32_to_bf16(r1 - bf16_to_f32(m));
  }
}

__global__ void sum3_kernel(const float* a, const float* b, const float* c, int64_t ld_in, int64_t rows, int64_t n,
                            bool bf16, float* y, int64_t ld) {
  const int64_t total = rows * n;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / n, i = t % n, k = r * ld_in + i;
    const float v = (a[k] + b[k]) + c[k];
    y[r * ld + i] = bf16 ? round_bf16(v) : v;
  }
}

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
  const bool vec = w.in % kDeqElems == 0 && w.block_in % kDeqElems == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(w.data) % 16 == 0;
  const int64_t per_row = (w.in + kDeqElems - 1) / kDeqElems;
  const int64_t gx = (per_row + kThreads - 1) / kThreads;
  if (gx > INT_MAX || rows > int64_t{65535} * 65535) return cudaErrorInvalidValue;
  // blockIdx.y + 65535·blockIdx.z = row: full slices of 65535 rows, then the rest.
  const int64_t full = rows / 65535, rest = rows % 65535;
  if (full > 0)
    weight_to_bf16_kernel<<<dim3(static_cast<unsigned>(gx), 65535u, static_cast<unsigned>(full)), kThreads, 0, stream>>>(
        w, row0, out, vec);
  if (rest > 0)
    weight_to_bf16_kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(rest), 1u), kThreads, 0, stream>>>(
        w, row0 + full * 65535, out + full * 65535 * w.in, vec);
  return cudaGetLastError();
}

cudaError_t split3_bf16(const float* w, int64_t n, uint16_t* hi, uint16_t* mid, uint16_t* lo, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!w || !hi || !mid || !lo) return cudaErrorInvalidValue;
  split3_kernel<<<grid_for(n), kThreads, 0, stream>>>(w, n, hi, mid, lo);
  return cudaGetLastError();
}

cudaError_t sum3_rows(const float* a, const float* b, const float* c, int64_t ld_in, int64_t rows, int64_t n, bool bf16,
                      float* y, int64_t ld, cudaStream_t stream) {
  if (rows < 0 || n < 0 || ld < n || ld_in < n) return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  if (!a || !b || !c || !y) return cudaErrorInvalidValue;
  sum3_kernel<<<grid_for(rows * n), kThreads, 0, stream>>>(a, b, c, ld_in, rows, n, bf16, y, ld);
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
