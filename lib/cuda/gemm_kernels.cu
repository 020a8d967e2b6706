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

// ---- rows_to_bf16: the FP8 1×128 activation quantisation of spec §5.1 (the formula of
// stage_input in dense_kernels.cu and of fp8_act_quant_dequant: amax of the block, e8m0 scale,
// e4m3 code, dequantised) then bf16 — exact, the dequantised value has 4 significant bits.

// e4m3_to_f32(f32_to_e4m3(q)) for |q| ≤ 448 or NaN, in a few integer / f32 operations, same bits:
// the e4m3 round trip rounds q to nearest-even on the e4m3 grid — 3 mantissa bits for |q| ≥ 2^-6
// (the normal codes; |q| ≤ 448 = the largest code, so no rounding goes past it), multiples of 2^-9
// below (the subnormal codes, 2^-6 itself included): the first is the usual add-and-truncate at
// mantissa bit 20, the second (|q| + 2^14) − 2^14 (the f32 ulp of 2^14 is 2^-9; both steps exact
// but the one rounding), the sign put back after (so −tiny → −0 as the code 0x80 decodes). NaN
// takes the reference functions.
__device__ __forceinline__ float e4m3_round_trip(float q) {
  const uint32_t u = f32_to_bits(q), a = u & 0x7fffffffu, sign = u & 0x80000000u;
  if (a > 0x7f800000u) return e4m3_to_f32(f32_to_e4m3(q));
  if (a < 0x3c800000u) {  // |q| < 2^-6
    const float r = __fsub_rn(__fadd_rn(bits_to_f32(a), 16384.0f), 16384.0f);
    return bits_to_f32(f32_to_bits(r) | sign);
  }
  return bits_to_f32(((a + 0x7ffffu + ((a >> 20) & 1u)) & 0xfff00000u) | sign);
}

// One value of a block with scale s = e8m0_to_f32(code): stage_input's q = v / s, clamp to ±448,
// e4m3 round trip, · s. v / s is taken as v · (1 / s), 1 / s = 2^(127 − code) the normal float of
// exponent field 254 − code (code 1…253): the product of v and an exact reciprocal is the correctly rounded
// quotient, the division's bits (subnormal results included: no flush to zero here); other codes
// (never produced with the 1e-4 amax floor; NaN for an infinite amax) divide.
struct ActScale {
  float s, inv;
  bool use_inv;
};
__device__ __forceinline__ ActScale act_scale(float amax) {
  const uint8_t code = fp8_act_scale_e8m0(amax);
  ActScale r;
  r.s = e8m0_to_f32(code);
  r.use_inv = code >= 1 && code <= 253;
  r.inv = bits_to_f32(static_cast<uint32_t>(r.use_inv ? 254 - code : 127) << 23);
  return r;
}
__device__ __forceinline__ float act_qdq(float v, const ActScale& sc) {
  float q = sc.use_inv ? v * sc.inv : v / sc.s;
  q = q > 448.0f ? 448.0f : (q < -448.0f ? -448.0f : q);
  return e4m3_round_trip(q) * sc.s;
}

// Row kernels (rows_to_bf16, round_rows_bf16): CTAs of kThreads threads as blockDim (tx, ty) — ty
// rows per CTA of tx threads each (tx a multiple of 32: a warp stays in its row) — so that short
// rows still fill the CTA; grid.y = row groups (launches of at most 65535 of them, the kernel adds
// r0 and stops at r_end), grid.x the CTAs one row needs (a grid-stride loop past kMaxRowCtas).
// No division on the hot path.
constexpr int64_t kMaxRowCtas = 1 << 16;
struct RowShape {
  dim3 block;
  unsigned gx = 1;
};
// per_row: the thread items of one row.
RowShape row_shape(int64_t per_row) {
  int tx = 32;
  while (tx < kThreads && tx < per_row) tx *= 2;
  RowShape r;
  r.block = dim3(static_cast<unsigned>(tx), static_cast<unsigned>(kThreads / tx));
  const int64_t x = (per_row + tx - 1) / tx;
  r.gx = static_cast<unsigned>(x < 1 ? 1 : (x < kMaxRowCtas ? x : kMaxRowCtas));
  return r;
}
// Runs launch(grid, r0) over [0, rows) in launches of at most 65535 row groups.
template <class L>
cudaError_t for_row_groups(int64_t rows, const RowShape& rs, L&& launch) {
  const int64_t per_launch = int64_t{65535} * rs.block.y;
  for (int64_t r0 = 0; r0 < rows; r0 += per_launch) {
    const int64_t n = rows - r0 < per_launch ? rows - r0 : per_launch;
    launch(dim3(rs.gx, static_cast<unsigned>((n + rs.block.y - 1) / rs.block.y)), r0);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
__device__ __forceinline__ int64_t row_of_thread(int64_t r0) {
  return r0 + int64_t{blockIdx.y} * blockDim.y + threadIdx.y;
}

// rows_to_bf16: one warp per 128-column block, each warp two blocks at a time (b and b + step: both
// loads in flight before the reductions). VEC: lane l holds columns 4l…4l+3 of its block (one
// 16-byte load, one 8-byte store of 4 bf16; n, x_stride, out_stride multiples of 4, x 16-byte and out
// 8-byte aligned); else columns l, l + 32, l + 64, l + 96 (any shape). A block's maximum does not
// depend on which lane holds which column, so both give fp8_act_quant_dequant's values.
template <bool VEC>
__device__ __forceinline__ void block_load(const float* xr, int64_t n, int64_t b, int lane, float (&v)[4]) {
  if constexpr (VEC) {
    const int64_t i = b * 128 + 4 * lane;
    if (i < n) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(xr + i));
      v[0] = t.x;
      v[1] = t.y;
      v[2] = t.z;
      v[3] = t.w;
    } else {
      v[0] = v[1] = v[2] = v[3] = 0.0f;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b * 128 + lane + 32 * j;
      v[j] = i < n ? __ldg(xr + i) : 0.0f;
    }
  }
}
template <bool VEC>
__device__ __forceinline__ void block_store(uint16_t* orow, int64_t n, int64_t b, int lane, const float (&v)[4]) {
  if constexpr (VEC) {
    const int64_t i = b * 128 + 4 * lane;
    if (i < n)
      *reinterpret_cast<uint2*>(orow + i) =
          make_uint2(f32_to_bf16(v[0]) | (uint32_t{f32_to_bf16(v[1])} << 16),
                     f32_to_bf16(v[2]) | (uint32_t{f32_to_bf16(v[3])} << 16));
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b * 128 + lane + 32 * j;
      if (i < n) orow[i] = f32_to_bf16(v[j]);
    }
  }
}
__device__ __forceinline__ float abs_max4(const float (&v)[4]) {
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float a = fabsf(v[j]);
    amax = a > amax ? a : amax;
  }
  return amax;
}
template <bool VEC>
__global__ void __launch_bounds__(kThreads) rows_to_bf16_kernel(const float* x, int64_t x_stride, const int32_t* x_rows,
                                                                int64_t r_end, int64_t n, bool quant, uint16_t* out,
                                                                int64_t out_stride, int64_t r0) {
  const int64_t r = row_of_thread(r0);
  if (r >= r_end) return;  // whole warps (a warp lies in one row); no barrier follows
  const int lane = threadIdx.x % 32;
  const float* xr = x + (x_rows ? int64_t{x_rows[r]} : r) * x_stride;
  uint16_t* orow = out + r * out_stride;
  const int64_t nb = (n + 127) / 128;
  const int64_t wpr = blockDim.x / 32;  // warps per row in a CTA
  const int64_t step = int64_t{gridDim.x} * wpr;
  for (int64_t b0 = int64_t{blockIdx.x} * wpr + threadIdx.x / 32; b0 < nb; b0 += 2 * step) {
    const int64_t b1 = b0 + step;
    const bool two = b1 < nb;  // warp-uniform
    float v0[4], v1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    block_load<VEC>(xr, n, b0, lane, v0);
    if (two) block_load<VEC>(xr, n, b1, lane, v1);
    if (quant) {
      float m0 = abs_max4(v0), m1 = abs_max4(v1);
      for (int o = 16; o > 0; o >>= 1) {  // both warp maxima at once
        const float t0 = __shfl_xor_sync(kFullMask, m0, o), t1 = __shfl_xor_sync(kFullMask, m1, o);
        m0 = t0 > m0 ? t0 : m0;
        m1 = t1 > m1 ? t1 : m1;
      }
      const ActScale s0 = act_scale(m0), s1 = act_scale(m1);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v0[j] = act_qdq(v0[j], s0);
        v1[j] = act_qdq(v1[j], s1);  // stored only when two
      }
    }
    block_store<VEC>(orow, n, b0, lane, v0);
    if (two) block_store<VEC>(orow, n, b1, lane, v1);
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

// y[r, ·] = round_bf16(y[r, ·]) (the row kernels' shape): V = 4: 16-byte loads / stores (ld a
// multiple of 4, y 16-byte aligned) and the n % 4 tail by element.
template <int V>
__global__ void __launch_bounds__(kThreads) round_rows_bf16_kernel(float* y, int64_t ld, int64_t r_end, int64_t n,
                                                                   int64_t r0) {
  const int64_t r = row_of_thread(r0);
  if (r >= r_end) return;
  float* row = y + r * ld;
  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x, step = int64_t{gridDim.x} * blockDim.x;
  if constexpr (V == 4) {
    for (int64_t c = first; c < n / 4; c += step) {
      float4 t = *reinterpret_cast<const float4*>(row + 4 * c);
      t.x = round_bf16(t.x);
      t.y = round_bf16(t.y);
      t.z = round_bf16(t.z);
      t.w = round_bf16(t.w);
      *reinterpret_cast<float4*>(row + 4 * c) = t;
    }
    for (int64_t i = n / 4 * 4 + first; i < n; i += step) row[i] = round_bf16(row[i]);
  } else {
    for (int64_t i = first; i < n; i += step) row[i] = round_bf16(row[i]);
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
  const bool vec = n % 4 == 0 && x_stride % 4 == 0 && out_stride % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 8 == 0;
  // A row's warps: (n + 127) / 128 blocks, two per warp.
  const RowShape rs = row_shape(((n + 127) / 128 + 1) / 2 * 32);
  return for_row_groups(rows, rs, [&](dim3 grid, int64_t r0) {
    if (vec)
      rows_to_bf16_kernel<true><<<grid, rs.block, 0, stream>>>(x, x_stride, x_rows, rows, n, quant, out, out_stride, r0);
    else
      rows_to_bf16_kernel<false><<<grid, rs.block, 0, stream>>>(x, x_stride, x_rows, rows, n, quant, out, out_stride, r0);
  });
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
  const bool vec = ld % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  const RowShape rs = row_shape(vec ? (n + 3) / 4 : n);
  return for_row_groups(rows, rs, [&](dim3 grid, int64_t r0) {
    if (vec)
      round_rows_bf16_kernel<4><<<grid, rs.block, 0, stream>>>(y, ld, rows, n, r0);
    else
      round_rows_bf16_kernel<1><<<grid, rs.block, 0, stream>>>(y, ld, rows, n, r0);
  });
}

}  // namespace dsv4::cuda
