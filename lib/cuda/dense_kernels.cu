// The dense (non-attention) kernels of the CUDA forward (contract: lib/cuda/kernels.hpp, section
// "dense_kernels.cu"): the linear layer in every checkpoint weight format, the embedding, RMSNorm
// and the per-head query norm, interleaved RoPE, the hyper-connection mixes (hc_pre with Sinkhorn,
// hc_post, the head's collapse), the MoE router, SwiGLU and the expert combine. Each mirrors the CPU
// backend's op of the same name (lib/cpu/*.cpp) and uses the shared host/device helpers of
// dsv4/numerics.hpp, dsv4/dtypes.hpp and dsv4/weight_view.hpp, so there is one definition of every
// per-element formula.
//
// Precision policy. Long reductions (dot products, sums of squares) accumulate in f32 (fmaf) where
// the CPU twin accumulates in double; that difference is the tests' tolerance. Short scalar work the
// CPU does in double (the normalising factor 1/rms, Sinkhorn, sigmoid/softplus, the hc collapse of
// hc terms, RoPE's rotation) is done in double here too, so that those steps add no error of their
// own; where the inputs are identical and the operations are the same (hc_post, the official MoE
// sum, the official head norm, the embedding) the result is bit-identical to the CPU twin.
//
// This is the readable reference stage: one straightforward kernel per op, correctness first.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "dsv4/numerics.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;  // every kernel here runs 256-thread CTAs (8 warps)
constexpr int kWarps = kThreads / 32;
// Row-per-CTA kernels (RMSNorm, the HC mixes) run 1024-thread CTAs for up to kFewRows rows: at
// decode one CTA is the whole kernel and its loads' latency, not bandwidth, is the time.
constexpr int kBigCta = 1024;
constexpr int64_t kFewRows = 16;

// ---- small helpers ------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
// Max of non-negative values; a NaN operand is ignored, as fp8_act_quant_dequant's `>` scan does.
__device__ __forceinline__ float warp_max_nonneg(float v) {
  for (int o = 16; o > 0; o >>= 1) {
    const float t = __shfl_xor_sync(kFullMask, v, o);
    v = t > v ? t : v;
  }
  return v;
}
// Sum over the CTA (blockDim.x == kThreads); every thread gets the result. Ends with a barrier so
// the caller may overwrite what it summed.
template <int NT = kThreads>
__device__ float block_sum(float v) {
  constexpr int kW = NT / 32;
  __shared__ float part[kW];
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < kW ? part[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

// Grid for a grid-stride loop over n elements.
unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (int64_t{1} << 20) ? b : (int64_t{1} << 20));
}
bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

// ============================ linear =======================================================

constexpr int kLinColsPerWarp = 4;                        // independent weight streams per warp
constexpr int kLinCols = kWarps * kLinColsPerWarp;        // output columns per CTA
constexpr int64_t kLinChunk = 8192;                       // input values staged per pass (32 KB)
static_assert(kLinChunk % 128 == 0, "chunks must hold whole FP8 activation blocks");

// Element i of a weight row before its block scale (fp8 / fp4: the code's value; bf16 / f32: the
// value itself). Same decoders as WeightView::at; the caller multiplies by the block's scale
// exactly as at() does, so the product is the exact dequantised weight.
template <WeightFormat F>
__device__ __forceinline__ float weight_elem(const uint8_t* row, int64_t i) {
  if constexpr (F == WeightFormat::f32) return __ldg(reinterpret_cast<const float*>(row) + i);
  else if constexpr (F == WeightFormat::bf16) return bf16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(row) + i));
  else if constexpr (F == WeightFormat::fp8) return e4m3_to_f32(__ldg(row + i));
  else return e2m1_to_f32(fp4_get(row, i));
}
template <WeightFormat F>
__host__ __device__ __forceinline__ int64_t row_bytes(int64_t in) {
  if constexpr (F == WeightFormat::f32) return in * 4;
  else if constexpr (F == WeightFormat::bf16) return in * 2;
  else if constexpr (F == WeightFormat::fp8) return in;
  else return in / 2;
}

// Stages x[0, len) into shared memory, FP8 1×128 quantise-dequantised when `quant` (spec §5.1,
// the formula of fp8_act_quant_dequant / detail::block_qdq, one warp per block of 128: x starts
// at a block boundary of the input row, so the blocks are the row's blocks).
__device__ void stage_input(const float* x, int64_t len, bool quant, float* xs) {
  if (!quant) {
    for (int64_t i = threadIdx.x; i < len; i += kThreads) xs[i] = x[i];
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t b = int64_t{warp} * 128; b < len; b += int64_t{kWarps} * 128) {
    float v[4], amax = 0.0f;
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b + lane + 32 * j;
      v[j] = i < len ? x[i] : 0.0f;
      const float a = fabsf(v[j]);
      amax = a > amax ? a : amax;
    }
    amax = warp_max_nonneg(amax);
    const float s = e8m0_to_f32(fp8_act_scale_e8m0(amax));
    for (int j = 0; j < 4; ++j) {
      const int64_t i = b + lane + 32 * j;
      if (i >= len) continue;
      float q = v[j] / s;  // exact: s is a power of two
      q = q > 448.0f ? 448.0f : (q < -448.0f ? -448.0f : q);
      xs[i] = e4m3_to_f32(f32_to_e4m3(q)) * s;
    }
  }
}

// One CTA per (kLinCols output columns of one group, one row r = row0 + blockIdx.y). The input row
// is staged through shared memory in chunks of kLinChunk values; each warp owns kLinColsPerWarp
// columns, its lanes stride over the inputs, and the partial sums meet in a shuffle reduction.
template <WeightFormat F>
__global__ void __launch_bounds__(kThreads) linear_kernel(LinearArgs a, int64_t group_out, int64_t blocks_per_group,
                                                          int64_t row0) {
  __shared__ float xs[kLinChunk];
  const int64_t r = row0 + blockIdx.y;
  const WeightView& w = a.w;
  const int64_t in = w.in;
  const uint8_t* data = w.data;
  const uint8_t* scale = w.scale;
  if (a.expert_ids) {
    const int32_t e = a.expert_ids[r];
    if (e < 0) return;  // the whole CTA: the row is skipped, y left untouched
    data += e * a.expert_data_stride;
    if (scale) scale += e * a.expert_scale_stride;
  }
  const int64_t g = blockIdx.x / blocks_per_group;
  const int64_t o_begin = g * group_out + (blockIdx.x % blocks_per_group) * kLinCols;
  const int64_t o_end = o_begin + kLinCols < (g + 1) * group_out ? o_begin + kLinCols : (g + 1) * group_out;
  const float* xrow = a.x + (a.x_rows ? int64_t{a.x_rows[r]} : r) * a.x_stride + g * in;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint8_t* wrow[kLinColsPerWarp];
  const uint8_t* srow[kLinColsPerWarp];
  int64_t col[kLinColsPerWarp];
  for (int c = 0; c < kLinColsPerWarp; ++c) {
    col[c] = o_begin + warp * kLinColsPerWarp + c;
    const int64_t o = col[c] < o_end ? col[c] : o_end - 1;  // surplus columns read a valid row, never write
    wrow[c] = data + o * row_bytes<F>(in);
    if constexpr (F == WeightFormat::fp8) srow[c] = scale + (o / w.block_out) * w.scale_cols;
    else if constexpr (F == WeightFormat::fp4) srow[c] = scale + o * w.scale_cols;
    else srow[c] = nullptr;
  }

  float acc[kLinColsPerWarp] = {};
  for (int64_t c0 = 0; c0 < in; c0 += kLinChunk) {
    const int64_t len = in - c0 < kLinChunk ? in - c0 : kLinChunk;
    __syncthreads();  // the previous chunk is consumed
    stage_input(xrow + c0, len, a.quant_act, xs);
    __syncthreads();
    if constexpr (F == WeightFormat::fp8 || F == WeightFormat::fp4) {
      // Scale blocks along the row: one e8m0 scale per column and block, applied per element as
      // WeightView::at does (code value × scale, exact).
      const int64_t bin = w.block_in;
      for (int64_t b0 = c0; b0 < c0 + len;) {
        const int64_t blk = b0 / bin;
        const int64_t b1 = (blk + 1) * bin < c0 + len ? (blk + 1) * bin : c0 + len;
        float s[kLinColsPerWarp];
        for (int c = 0; c < kLinColsPerWarp; ++c) s[c] = e8m0_to_f32(srow[c][blk]);
        for (int64_t i = b0 + lane; i < b1; i += 32) {
          const float xv = xs[i - c0];
          for (int c = 0; c < kLinColsPerWarp; ++c) acc[c] = fmaf(xv, weight_elem<F>(wrow[c], i) * s[c], acc[c]);
        }
        b0 = b1;
      }
    } else {
      for (int64_t i = c0 + lane; i < c0 + len; i += 32) {
        const float xv = xs[i - c0];
        for (int c = 0; c < kLinColsPerWarp; ++c) acc[c] = fmaf(xv, weight_elem<F>(wrow[c], i), acc[c]);
      }
    }
  }
  for (int c = 0; c < kLinColsPerWarp; ++c) {
    const float v = warp_sum(acc[c]);
    if (lane == 0 && col[c] < o_end) a.y[r * a.y_stride + col[c]] = a.bf16_out ? round_bf16(v) : v;
  }
}

// ---- the vectorised path: 16-byte weight loads, up to R rows per CTA --------------------------
// Where rows are 16-byte aligned and each 16-byte chunk lies inside one scale block, every lane
// loads 16 bytes of its warp's weight row per step (16 FP8 / 32 FP4 codes, 8 bf16, 4 f32) and
// applies them to R staged input rows, so a weight byte is read once per R rows instead of once per
// row. The per-chunk partial sum is multiplied by the chunk's power-of-two scale (exact: scaling by
// 2^k commutes with f32 rounding away from subnormals), so the result is the same dot product with
// the exactly dequantised weight as the scalar path, in another f32 summation order.
constexpr int kVecSmemFloats = 12288;  // 48 KB of staged input rows (no opt-in needed)

template <WeightFormat F> constexpr int kElemsPerChunk = F == WeightFormat::f32 ? 4 : F == WeightFormat::bf16 ? 8
                                                         : F == WeightFormat::fp8 ? 16 : 32;

template <WeightFormat F>
__device__ __forceinline__ void decode_chunk(const uint4& q, float* v) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  if constexpr (F == WeightFormat::f32) {
    for (int j = 0; j < 4; ++j) v[j] = __uint_as_float(w[j]);
  } else if constexpr (F == WeightFormat::bf16) {
    for (int j = 0; j < 4; ++j) {
      v[2 * j] = __uint_as_float(w[j] << 16);
      v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  } else if constexpr (F == WeightFormat::fp8) {
    for (int j = 0; j < 16; ++j) v[j] = e4m3_to_f32(static_cast<uint8_t>(w[j / 4] >> (8 * (j % 4))));
  } else {
    for (int j = 0; j < 32; ++j) v[j] = e2m1_to_f32(static_cast<uint8_t>((w[j / 8] >> (4 * (j % 8))) & 0xf));
  }
}

// One CTA per (kWarps output columns of one group, R rows); warp = column.
template <WeightFormat F, int R>
__global__ void __launch_bounds__(kThreads) linear_vec_kernel(LinearArgs a, int64_t group_out,
                                                              int64_t blocks_per_group) {
  extern __shared__ float xsv[];  // [R][in]
  constexpr int E = kElemsPerChunk<F>;
  const WeightView& w = a.w;
  const int64_t in = w.in;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * R;
  const int nr = a.rows - r0 < R ? static_cast<int>(a.rows - r0) : R;
  const uint8_t* data = w.data;
  const uint8_t* scale = w.scale;
  if (a.expert_ids) {  // R == 1 with expert ids (each row has its own expert)
    const int32_t e = a.expert_ids[r0];
    if (e < 0) return;
    data += e * a.expert_data_stride;
    if (scale) scale += e * a.expert_scale_stride;
  }
  const int64_t g = blockIdx.x / blocks_per_group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t o = g * group_out + (blockIdx.x % blocks_per_group) * kWarps + warp;
  const bool live = o < (g + 1) * group_out;
  for (int r = 0; r < nr; ++r) {
    const int64_t xr = a.x_rows ? int64_t{a.x_rows[r0 + r]} : r0 + r;
    stage_input(a.x + xr * a.x_stride + g * in, in, a.quant_act, xsv + r * in);
  }
  __syncthreads();
  if (!live) return;
  const uint4* wrow = reinterpret_cast<const uint4*>(data + o * row_bytes<F>(in));
  const int64_t chunks = row_bytes<F>(in) / 16;
  const uint8_t* srow = nullptr;
  if constexpr (F == WeightFormat::fp8) srow = scale + (o / w.block_out) * w.scale_cols;
  if constexpr (F == WeightFormat::fp4) srow = scale + o * w.scale_cols;
  float acc[R] = {};
  for (int64_t c = lane; c < chunks; c += 32) {
    float v[E];
    decode_chunk<F>(__ldg(wrow + c), v);
    const int64_t e0 = c * E;
    float s = 1.0f;
    if constexpr (F == WeightFormat::fp8 || F == WeightFormat::fp4) s = e8m0_to_f32(__ldg(srow + e0 / w.block_in));
    for (int r = 0; r < R; ++r) {
      if (r >= nr) break;
      const float* xv = xsv + r * in + e0;
      float part = 0.0f;
      for (int j = 0; j < E; ++j) part = fmaf(xv[j], v[j], part);
      acc[r] = fmaf(part, s, acc[r]);
    }
  }
  for (int r = 0; r < nr; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) a.y[(r0 + r) * a.y_stride + o] = a.bf16_out ? round_bf16(v) : v;
  }
}

template <WeightFormat F>
bool vec_ok(const LinearArgs& a) {
  const WeightView& w = a.w;
  if (row_bytes<F>(w.in) % 16 != 0 || !aligned(w.data, 16) || a.expert_data_stride % 16 != 0) return false;
  if (w.in > kVecSmemFloats) return false;
  if constexpr (F == WeightFormat::fp8 || F == WeightFormat::fp4)
    if (w.block_in % kElemsPerChunk<F> != 0) return false;
  return true;
}

template <WeightFormat F, int R>
cudaError_t launch_vec_rows(const LinearArgs& a, int64_t groups, int64_t group_out, cudaStream_t stream) {
  const int64_t blocks_per_group = (group_out + kWarps - 1) / kWarps;
  const int64_t gx = groups * blocks_per_group, gy = (a.rows + R - 1) / R;
  if (gx > INT_MAX || gy > 65535) return cudaErrorInvalidValue;
  const size_t smem = static_cast<size_t>(R) * static_cast<size_t>(a.w.in) * sizeof(float);
  linear_vec_kernel<F, R><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kThreads, smem, stream>>>(
      a, group_out, blocks_per_group);
  return cudaGetLastError();
}

template <WeightFormat F>
cudaError_t launch_linear(const LinearArgs& a, int64_t groups, int64_t group_out, cudaStream_t stream) {
  // The vectorised path where it applies (rows ≤ 65535·R), else the scalar reference path.
  if (vec_ok<F>(a) && !a.no_vec) {
    const int64_t fit = kVecSmemFloats / a.w.in;  // rows of input that fit the staging memory
    if (a.expert_ids || fit < 2 || a.rows == 1) {
      if (a.rows <= 65535) return launch_vec_rows<F, 1>(a, groups, group_out, stream);
    } else if (fit < 4 || a.rows == 2) {
      if (a.rows <= 2 * 65535) return launch_vec_rows<F, 2>(a, groups, group_out, stream);
    } else if (fit < 8 || a.rows <= 4) {
      if (a.rows <= 4 * 65535) return launch_vec_rows<F, 4>(a, groups, group_out, stream);
    } else if (a.rows <= 8 * 65535) {
      return launch_vec_rows<F, 8>(a, groups, group_out, stream);
    }
  }
  const int64_t blocks_per_group = (group_out + kLinCols - 1) / kLinCols;
  const int64_t gx = groups * blocks_per_group;
  if (gx > INT_MAX) return cudaErrorInvalidValue;
  constexpr int64_t kMaxGridY = 65535;
  for (int64_t row0 = 0; row0 < a.rows; row0 += kMaxGridY) {
    const int64_t n = a.rows - row0 < kMaxGridY ? a.rows - row0 : kMaxGridY;
    linear_kernel<F><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(n)), kThreads, 0, stream>>>(
        a, group_out, blocks_per_group, row0);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// ============================ embedding, norms, RoPE =========================================

__global__ void embed_kernel(const void* table, bool is_f32, const int32_t* tokens, int64_t S, int64_t D, int hc,
                             bool official, float* X) {
  const int64_t n = S * hc * D;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = idx / (hc * D), d = idx % D;
    const int64_t t = tokens[s];
    float v = is_f32 ? static_cast<const float*>(table)[t * D + d]
                     : bf16_to_f32(static_cast<const uint16_t*>(table)[t * D + d]);
    X[idx] = official ? round_bf16(v) : v;
  }
}

// One CTA per row: f32 sum of squares, the factor 1/sqrt(mean + eps) and the products in double
// (as norm.cpp), then the f32 result (bf16 when asked). In place is safe: block_sum's barrier
// separates every read of the sum pass from the writes.
// NT threads: 1024 for a few rows (decode: one CTA per row is latency-bound), else kThreads.
template <int NT>
__global__ void __launch_bounds__(NT) rms_norm_kernel(const float* x, int64_t x_stride, const float* w, int64_t n,
                                                            float eps, bool bf16_out, float* out, int64_t out_stride) {
  const float* xr = x + blockIdx.x * x_stride;
  float* orow = out + blockIdx.x * out_stride;
  float ss = 0.0f;
#pragma unroll 8  // independent loads in flight (a decode row is one CTA: latency, not bandwidth)
  for (int64_t i = threadIdx.x; i < n; i += NT) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum<NT>(ss);
  const double r = 1.0 / sqrt(static_cast<double>(ss) / static_cast<double>(n) + static_cast<double>(eps));
  // Four elements per thread loaded before any store (out may alias x: each thread rewrites only
  // what it read).
  constexpr int kU4 = 4;
  for (int64_t i0 = threadIdx.x; i0 < n; i0 += int64_t{NT} * kU4) {
    float xv[kU4], wv[kU4];
#pragma unroll
    for (int j = 0; j < kU4; ++j) {
      const int64_t i = i0 + int64_t{j} * NT;
      xv[j] = i < n ? xr[i] : 0.0f;
      wv[j] = w && i < n ? w[i] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kU4; ++j) {
      const int64_t i = i0 + int64_t{j} * NT;
      if (i >= n) break;
      const float v = static_cast<float>(w ? static_cast<double>(wv[j]) * xv[j] * r : xv[j] * r);
      orow[i] = bf16_out ? round_bf16(v) : v;
    }
  }
}

// Official per-head norm, one warp per row: exactly head_rms_norm_bf16 (dsv4/numerics.hpp). Its
// f32 sum is sequential in element order; the lanes square-and-round in parallel and every lane
// then adds the 32 terms of a step in lane order via shuffles, so the sum (and the result) is
// bit-identical to the CPU twin.
__global__ void __launch_bounds__(kThreads) head_rms_norm_bf16_kernel(float* q, int64_t rows, int64_t n, float eps) {
  const int64_t r = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;  // whole warp
  float* row = q + r * n;
  float acc = 0.0f;
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t i = base + lane;
    const float t = i < n ? round_bf16(row[i] * row[i]) : 0.0f;
    if (n - base >= 32) {
#pragma unroll  // the 32 shuffles issue ahead of the sequential adds
      for (int l = 0; l < 32; ++l) acc += __shfl_sync(kFullMask, t, l);
    } else {
      const int m = static_cast<int>(n - base);
      for (int l = 0; l < m; ++l) acc += __shfl_sync(kFullMask, t, l);
    }
  }
  const float s = round_bf16(acc / static_cast<float>(n));
  const float rr = round_bf16(1.0f / sqrtf(round_bf16(s + eps)));
  for (int64_t i = lane; i < n; i += 32) row[i] = round_bf16(row[i] * rr);
}

// One thread per rotated pair, rope.cpp's arithmetic: f32 angle, cos/sin and the rotation in
// double (explicit _rn operations so no fused multiply-add changes the double rounding).
__global__ void rope_kernel(float* v, int64_t rows, int64_t stride, int64_t col, int half, const float* inv_freq,
                            int64_t p0, int64_t rows_per_position, bool inverse, bool bf16_out) {
  const int64_t n = rows * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / half;
    const int i = static_cast<int>(idx % half);
    const float theta = static_cast<float>(p0 + r / rows_per_position) * inv_freq[i];
    double sn, cs;
    sincos(static_cast<double>(theta), &sn, &cs);
    if (inverse) sn = -sn;
    float* pv = v + r * stride + col + 2 * i;
    const double a = pv[0], b = pv[1];
    float v0 = static_cast<float>(__dsub_rn(__dmul_rn(a, cs), __dmul_rn(b, sn)));
    float v1 = static_cast<float>(__dadd_rn(__dmul_rn(a, sn), __dmul_rn(b, cs)));
    if (bf16_out) {
      v0 = round_bf16(v0);
      v1 = round_bf16(v1);
    }
    pv[0] = v0;
    pv[1] = v1;
  }
}

// ============================ hyper-connections ================================================

constexpr int kMaxHc = 16;
constexpr int kMaxMix = (2 + kMaxHc) * kMaxHc;

__device__ __forceinline__ double sigmoid_d(double v) { return 1.0 / (1.0 + exp(-v)); }

// hc.cpp's mixes(): m[i] = (v · fn[i]) / rms(v) over v = the token's hc·D stream values. f32 sum of
// squares and f32 dot products (one warp per fn row), 1/rms and the product in double.
template <int NT>
__device__ void hc_mixes(const float* X, const float* fn, int64_t width, int mix, float norm_eps, double* m,
                         const float* partials = nullptr, int hc = 1) {
  float ss = 0.0f;
#pragma unroll 8  // independent loads in flight: one CTA per token reads hc·D values
  for (int64_t i = threadIdx.x; i < width; i += NT) ss = fmaf(X[i], X[i], ss);
  ss = block_sum<NT>(ss);
  const double r = 1.0 / sqrt(static_cast<double>(ss) / static_cast<double>(width) + static_cast<double>(norm_eps));
  if (partials) {  // the dots came from a grouped linear: sum the streams' partials (f32, j ascending)
    for (int i = threadIdx.x; i < mix; i += NT) {
      float acc = 0.0f;
      for (int j = 0; j < hc; ++j) acc += partials[j * mix + i];
      m[i] = static_cast<double>(acc) * r;
    }
    __syncthreads();
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = warp; i < mix; i += NT / 32) {
    const float* f = fn + i * width;
    float acc = 0.0f;
    for (int64_t k = lane; k < width; k += 32) acc = fmaf(X[k], f[k], acc);
    acc = warp_sum(acc);
    if (lane == 0) m[i] = static_cast<double>(acc) * r;
  }
  __syncthreads();
}

// x_out[d] = Σ_j pre[j]·X[j, d] in double, j ascending (hc.cpp's collapse).
template <int NT>
__device__ void hc_collapse(const double* pre, const float* X, int hc, int64_t D, bool official, float* out) {
#pragma unroll 4
  for (int64_t d = threadIdx.x; d < D; d += NT) {
    double acc = 0.0;
    for (int j = 0; j < hc; ++j) acc += pre[j] * X[j * D + d];
    out[d] = official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  }
}

// The scalar part of hc_pre, statement by statement as hc.cpp (double): pre / post gates, then the
// comb matrix's row softmax + eps, column normalisation and (iters − 1) × (row, column).
// One thread (any hc ≤ kMaxHc).
__device__ void hc_scalar_serial(const HcParams& p, const double* m, int64_t s, double* pre, double* C, float* post,
                                 float* comb) {
  const int hc = p.hc;
  const double eps = p.hc_eps;
  const double s0 = p.scale[0], s1 = p.scale[1], s2 = p.scale[2];
  for (int j = 0; j < hc; ++j) {
    pre[j] = sigmoid_d(m[j] * s0 + p.base[j]) + eps;
    post[s * hc + j] = static_cast<float>(2.0 * sigmoid_d(m[hc + j] * s1 + p.base[hc + j]));
  }
  for (int k = 0; k < hc * hc; ++k) C[k] = m[2 * hc + k] * s2 + p.base[2 * hc + k];
  auto col_norm = [&] {
    for (int k = 0; k < hc; ++k) {
      double cs = 0;
      for (int j = 0; j < hc; ++j) cs += C[j * hc + k];
      for (int j = 0; j < hc; ++j) C[j * hc + k] /= cs + eps;
    }
  };
  for (int j = 0; j < hc; ++j) {
    double mx = C[j * hc];
    for (int k = 1; k < hc; ++k) mx = C[j * hc + k] > mx ? C[j * hc + k] : mx;
    double sum = 0;
    for (int k = 0; k < hc; ++k) sum += (C[j * hc + k] = exp(C[j * hc + k] - mx));
    for (int k = 0; k < hc; ++k) C[j * hc + k] = C[j * hc + k] / sum + eps;
  }
  col_norm();
  for (int it = 1; it < p.sinkhorn_iters; ++it) {
    for (int j = 0; j < hc; ++j) {
      double rs = 0;
      for (int k = 0; k < hc; ++k) rs += C[j * hc + k];
      for (int k = 0; k < hc; ++k) C[j * hc + k] /= rs + eps;
    }
    col_norm();
  }
  for (int k = 0; k < hc * hc; ++k) comb[s * hc * hc + k] = static_cast<float>(C[k]);
}

// The same for hc·hc ≤ 32, one warp: lane j·hc + k owns C[j, k]. Every row / column sum is still
// taken by each lane in the serial order (ascending index, from shared memory), and each element is
// divided by the same double, so the result is bit-identical to hc_scalar_serial — only the
// independent divisions and exps run in parallel (the serial chain of 20 Sinkhorn iterations was
// ~70 µs of a decode layer's hc_pre).
__device__ void hc_scalar_warp(const HcParams& p, const double* m, int64_t s, double* pre, double* C, float* post,
                               float* comb) {
  const int hc = p.hc, lane = static_cast<int>(threadIdx.x);
  const bool own = lane < hc * hc;
  const int j = lane / hc, k = lane % hc;
  const double eps = p.hc_eps;
  if (lane < hc) {
    pre[lane] = sigmoid_d(m[lane] * p.scale[0] + p.base[lane]) + eps;
    post[s * hc + lane] = static_cast<float>(2.0 * sigmoid_d(m[hc + lane] * p.scale[1] + p.base[hc + lane]));
  }
  if (own) C[lane] = m[2 * hc + lane] * p.scale[2] + p.base[2 * hc + lane];
  __syncwarp();
  // Row softmax + eps.
  double mx = own ? C[j * hc] : 0.0;
  if (own)
    for (int t = 1; t < hc; ++t) mx = C[j * hc + t] > mx ? C[j * hc + t] : mx;
  __syncwarp();
  if (own) C[lane] = exp(C[lane] - mx);
  __syncwarp();
  double sum = 0;
  if (own)
    for (int t = 0; t < hc; ++t) sum += C[j * hc + t];
  __syncwarp();
  if (own) C[lane] = C[lane] / sum + eps;
  __syncwarp();
  auto col_norm = [&] {
    double cs = 0;
    if (own)
      for (int t = 0; t < hc; ++t) cs += C[t * hc + k];
    __syncwarp();
    if (own) C[lane] /= cs + eps;
    __syncwarp();
  };
  col_norm();
  for (int it = 1; it < p.sinkhorn_iters; ++it) {
    double rs = 0;
    if (own)
      for (int t = 0; t < hc; ++t) rs += C[j * hc + t];
    __syncwarp();
    if (own) C[lane] /= rs + eps;
    __syncwarp();
    col_norm();
  }
  if (own) comb[s * hc * hc + lane] = static_cast<float>(C[lane]);
}

template <int NT>
__global__ void __launch_bounds__(NT) hc_pre_kernel(HcParams p, const float* X, float* x_out, float* post,
                                                          float* comb) {
  __shared__ double m[kMaxMix];
  __shared__ double C[kMaxHc * kMaxHc];
  __shared__ double pre[kMaxHc];
  const int hc = p.hc;
  const int64_t s = blockIdx.x, width = hc * p.D;
  const float* Xs = X + s * width;
  hc_mixes<NT>(Xs, p.fn, width, (2 + hc) * hc, p.norm_eps, m,
           p.partials ? p.partials + s * hc * (2 + hc) * hc : nullptr, hc);
  if (hc * hc <= 32) {
    if (threadIdx.x < 32) hc_scalar_warp(p, m, s, pre, C, post, comb);
  } else if (threadIdx.x == 0) {
    hc_scalar_serial(p, m, s, pre, C, post, comb);
  }
  __syncthreads();
  hc_collapse<NT>(pre, Xs, hc, p.D, p.official, x_out + s * p.D);
}

// Elementwise; the double sum of exact float·float products in hc.cpp's order: bit-identical.
__global__ void hc_post_kernel(int hc, int64_t D, bool official, const float* y, const float* R, const float* post,
                               const float* comb, int64_t S, float* X_new) {
  const int64_t n = S * hc * D;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = idx / (hc * D), d = idx % D;
    const int k = static_cast<int>((idx / D) % hc);
    double acc = static_cast<double>(post[s * hc + k]) * y[s * D + d];
    for (int j = 0; j < hc; ++j)
      acc += static_cast<double>(comb[(s * hc + j) * hc + k]) * R[(s * hc + j) * D + d];
    X_new[idx] = official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  }
}

template <int NT>
__global__ void __launch_bounds__(NT) hc_head_kernel(HcParams p, const float* X, float* h) {
  __shared__ double m[kMaxHc];
  __shared__ double pre[kMaxHc];
  const int hc = p.hc;
  const int64_t s = blockIdx.x, width = hc * p.D;
  const float* Xs = X + s * width;
  hc_mixes<NT>(Xs, p.fn, width, hc, p.norm_eps, m, p.partials ? p.partials + s * hc * hc : nullptr, hc);
  const int j = static_cast<int>(threadIdx.x);
  if (j < hc) pre[j] = sigmoid_d(m[j] * p.scale[0] + p.base[j]) + p.hc_eps;
  __syncthreads();
  hc_collapse<NT>(pre, Xs, hc, p.D, p.official, h + s * p.D);
}

bool hc_params_ok(const HcParams& p) {
  return p.fn && p.base && p.scale && p.hc >= 1 && p.hc <= kMaxHc && p.D > 0 && p.sinkhorn_iters >= 0;
}

// ============================ MoE ==============================================================

constexpr int kMaxE = 1024;
constexpr int kMaxK = 32;

// One CTA per token. Logits x·gate_e in f32 (one warp per expert), score sqrt(softplus) in double
// as moe.cpp; warp 0 selects (hash or top-K with ties to the lower id) and lane 0 normalises over
// the kept slots in slot order, as moe.cpp sums over `chosen`.
__global__ void __launch_bounds__(kThreads) router_kernel(RouterParams p, const float* x, const int32_t* tokens,
                                                          int32_t* ids, float* weights) {
  __shared__ double score[kMaxE];
  __shared__ int32_t chosen[kMaxK];
  const int64_t s = blockIdx.x, D = p.D;
  const int E = p.E, K = p.K;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* xr = x + s * D;
  if (p.logits) {  // precomputed x·gateᵀ (a linear over many CTAs)
    for (int e = threadIdx.x; e < E; e += kThreads) {
      const double z = p.logits[s * E + e];
      score[e] = sqrt(z > 20.0 ? z : log1p(exp(z)));
    }
  } else {
    for (int e = warp; e < E; e += kWarps) {
      const float* g = p.gate + e * D;
      float acc = 0.0f;
      for (int64_t k = lane; k < D; k += 32) acc = fmaf(xr[k], g[k], acc);
      acc = warp_sum(acc);
      if (lane == 0) {
        const double z = acc;
        score[e] = sqrt(z > 20.0 ? z : log1p(exp(z)));
      }
    }
  }
  __syncthreads();
  if (warp != 0) return;

  if (p.tid2eid) {
    // Hash routing: the token's first K table columns; a repeated id (or one outside [0, E), which
    // the loader's checks exclude) keeps no slot.
    if (lane == 0) {
      const int32_t* row = p.tid2eid + int64_t{tokens[s]} * p.tid2eid_cols;
      for (int k = 0; k < K; ++k) {
        const int32_t e = row[k];
        bool keep = e >= 0 && e < E;
        for (int j = 0; j < k && keep; ++j) keep = chosen[j] != e;
        chosen[k] = keep ? e : -1;
      }
    }
  } else {
    // Top-K of score + bias: K rounds of a warp argmax over the experts not taken yet, ordered by
    // (value descending, id ascending) — moe.cpp's partial_sort comparator. Lane l owns experts
    // l, l+32, …; the butterfly gives every lane the winner, and its owner marks it taken in a
    // register bit mask (E ≤ 1024 = 32 × 32), so no shared state is written between rounds.
    uint32_t taken_mine = 0;
    for (int k = 0; k < K; ++k) {
      double bv = -INFINITY;
      int be = INT_MAX;
      for (int e = lane; e < E; e += 32) {
        if ((taken_mine >> (e >> 5)) & 1u) continue;
        const double v = score[e] + (p.bias ? static_cast<double>(p.bias[e]) : 0.0);
        if (v > bv || (v == bv && e < be)) { bv = v; be = e; }
      }
      for (int o = 16; o > 0; o >>= 1) {
        const double ov = __shfl_xor_sync(kFullMask, bv, o);
        const int oe = __shfl_xor_sync(kFullMask, be, o);
        if (ov > bv || (ov == bv && oe < be)) { bv = ov; be = oe; }
      }
      if (lane == 0) chosen[k] = be == INT_MAX ? -1 : be;  // INT_MAX only if every remaining score is NaN
      if (be != INT_MAX && (be & 31) == lane) taken_mine |= 1u << (be >> 5);
    }
  }
  __syncwarp();
  if (lane == 0) {
    double sum = 0;
    for (int k = 0; k < K; ++k)
      if (chosen[k] >= 0) sum += score[chosen[k]];
    for (int k = 0; k < K; ++k) {
      const int32_t e = chosen[k];
      ids[s * K + k] = e;
      const double wgt = e < 0 ? 0.0 : (p.norm_topk_prob ? score[e] / sum : score[e]);
      weights[s * K + k] = e < 0 ? 0.0f : static_cast<float>(wgt * static_cast<double>(p.routed_scale));
    }
  }
}

// run_expert's SwiGLU, elementwise (official in f32 with the routing weight and one bf16
// rounding; reference in double).
__global__ void swiglu_kernel(const float* g, const float* u, const int32_t* ids, const float* weights, int64_t rows,
                              int64_t I, float limit, bool clamp, bool official, float* h, int64_t st) {
  const int64_t n = rows * I;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / I, in = r * st + idx % I;
    if (ids && ids[r] < 0) continue;
    if (official) {
      float gv = g[in], uv = u[in];
      if (clamp) {
        gv = limit < gv ? limit : gv;                                  // std::min(gv, limit)
        uv = uv < -limit ? -limit : (limit < uv ? limit : uv);         // std::clamp(uv, ±limit)
      }
      const float sw = gv / (1.0f + expf(-gv)) * uv;
      h[idx] = round_bf16((weights ? weights[r] : 1.0f) * sw);
    } else {
      double gv = g[in], uv = u[in];
      const double l = limit;
      if (clamp) {
        gv = l < gv ? l : gv;  // gate: from above only
        uv = uv < -l ? -l : (l < uv ? l : uv);
      }
      h[idx] = static_cast<float>(gv / (1.0 + exp(-gv)) * uv);
    }
  }
}

// CTAs (blockIdx.x = a kCombineCols column slice, blockIdx.y = token): thread 0 orders the token's
// valid slots by expert id (insertion sort, stable), then every thread sums its columns in that
// order, the shared expert last. Several CTAs per token so a decode step's one token still spreads
// over the SMs.
constexpr int64_t kCombineCols = 512;
__global__ void __launch_bounds__(kThreads) moe_combine_kernel(const float* y_slot, const int32_t* ids,
                                                               const float* weights, const float* y_shared, int K,
                                                               int64_t D, bool official, float* f,
                                                               const int32_t* y_rows) {
  __shared__ int order[kMaxK];
  __shared__ int n_valid;
  const int64_t s = blockIdx.y;
  const int32_t* sid = ids + s * K;
  if (threadIdx.x == 0) {
    int n = 0;
    for (int k = 0; k < K; ++k) {
      if (sid[k] < 0) continue;
      int j = n++;
      while (j > 0 && sid[order[j - 1]] > sid[k]) {
        order[j] = order[j - 1];
        --j;
      }
      order[j] = k;
    }
    n_valid = n;
  }
  __syncthreads();
  const int n = n_valid;
  const int64_t d_end = (blockIdx.x + 1) * kCombineCols < D ? (blockIdx.x + 1) * kCombineCols : D;
  for (int64_t d = blockIdx.x * kCombineCols + threadIdx.x; d < d_end; d += kThreads) {
    float acc = 0.0f;
    for (int t = 0; t < n; ++t) {
      const int k = order[t];
      const float y = y_slot[(y_rows ? int64_t{y_rows[s * K + k]} : s * K + k) * D + d];
      acc = official ? acc + y : fmaf(weights[s * K + k], y, acc);
    }
    acc += y_shared[s * D + d];
    f[s * D + d] = official ? round_bf16(acc) : acc;
  }
}

}  // namespace

// ============================ launchers ========================================================

cudaError_t linear(const LinearArgs& a, cudaStream_t stream) {
  if (a.rows < 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  const WeightView& w = a.w;
  if (!w.data || !a.x || !a.y || w.out <= 0 || w.in <= 0 || a.out_group < 0) return cudaErrorInvalidValue;
  if (a.expert_ids && (a.expert_data_stride < 0 || a.expert_scale_stride < 0)) return cudaErrorInvalidValue;
  int64_t groups = 1, group_out = w.out;
  if (a.out_group > 0) {
    if (w.out % a.out_group != 0) return cudaErrorInvalidValue;
    groups = w.out / a.out_group;
    group_out = a.out_group;
  }
  if (a.x_stride < groups * w.in || a.y_stride < w.out) return cudaErrorInvalidValue;
  if (!a.no_vec && !a.no_small && a.rows <= kLinearSmallMaxRows) {
    const cudaError_t e = linear_small(a, stream);  // NotSupported: before any launch
    if (e != cudaErrorNotSupported) return e;
  }
  switch (w.format) {
    case WeightFormat::f32:
      // Aligned element loads (device allocations are; an expert stride must keep them so).
      if (!aligned(w.data, 4) || a.expert_data_stride % 4 != 0) return cudaErrorInvalidValue;
      return launch_linear<WeightFormat::f32>(a, groups, group_out, stream);
    case WeightFormat::bf16:
      if (!aligned(w.data, 2) || a.expert_data_stride % 2 != 0) return cudaErrorInvalidValue;
      return launch_linear<WeightFormat::bf16>(a, groups, group_out, stream);
    case WeightFormat::fp8:
      if (!w.scale || w.block_out <= 0 || w.block_in <= 0 || w.scale_cols < (w.in + w.block_in - 1) / w.block_in)
        return cudaErrorInvalidValue;
      return launch_linear<WeightFormat::fp8>(a, groups, group_out, stream);
    case WeightFormat::fp4:
      if (!w.scale || w.block_in <= 0 || w.in % 2 != 0 || w.scale_cols < (w.in + w.block_in - 1) / w.block_in)
        return cudaErrorInvalidValue;
      return launch_linear<WeightFormat::fp4>(a, groups, group_out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t embed(const void* table, bool is_f32, const int32_t* tokens, int64_t S, int64_t D, int hc, bool official,
                  float* X, cudaStream_t stream) {
  if (S < 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!table || !tokens || !X || D <= 0 || hc < 1 || hc > kMaxHc || !aligned(table, is_f32 ? 4 : 2))
    return cudaErrorInvalidValue;
  embed_kernel<<<grid_for(S * hc * D), kThreads, 0, stream>>>(table, is_f32, tokens, S, D, hc, official, X);
  return cudaGetLastError();
}

cudaError_t rms_norm(const float* x, int64_t x_stride, const float* w, int64_t rows, int64_t n, float eps,
                     bool bf16_out, float* out, int64_t out_stride, cudaStream_t stream) {
  if (rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!x || !out || n <= 0 || x_stride < n || out_stride < n) return cudaErrorInvalidValue;
  if (rows <= kFewRows)
    rms_norm_kernel<kBigCta><<<static_cast<unsigned>(rows), kBigCta, 0, stream>>>(x, x_stride, w, n, eps, bf16_out, out,
                                                                                  out_stride);
  else
    rms_norm_kernel<kThreads><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, x_stride, w, n, eps, bf16_out, out,
                                                                        out_stride);
  return cudaGetLastError();
}

cudaError_t head_rms_norm(float* q, int64_t rows, int64_t n, float eps, bool official, cudaStream_t stream) {
  if (rows < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!q || n <= 0) return cudaErrorInvalidValue;
  if (!official) return rms_norm(q, n, nullptr, rows, n, eps, false, q, n, stream);
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  head_rms_norm_bf16_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(q, rows, n, eps);
  return cudaGetLastError();
}

cudaError_t rope(float* v, int64_t rows, int64_t stride, int64_t col, int rd, const float* inv_freq, int64_t p0,
                 int64_t rows_per_position, bool inverse, bool bf16_out, cudaStream_t stream) {
  if (rows < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!v || !inv_freq || rd <= 0 || rd % 2 != 0 || col < 0 || stride < col + rd || rows_per_position <= 0)
    return cudaErrorInvalidValue;
  const int half = rd / 2;
  rope_kernel<<<grid_for(rows * half), kThreads, 0, stream>>>(v, rows, stride, col, half, inv_freq, p0,
                                                              rows_per_position, inverse, bf16_out);
  return cudaGetLastError();
}

cudaError_t hc_pre(const HcParams& p, const float* X, int64_t S, float* x_out, float* post, float* comb,
                   cudaStream_t stream) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!hc_params_ok(p) || !X || !x_out || !post || !comb) return cudaErrorInvalidValue;
  if (S <= kFewRows)
    hc_pre_kernel<kBigCta><<<static_cast<unsigned>(S), kBigCta, 0, stream>>>(p, X, x_out, post, comb);
  else
    hc_pre_kernel<kThreads><<<static_cast<unsigned>(S), kThreads, 0, stream>>>(p, X, x_out, post, comb);
  return cudaGetLastError();
}

cudaError_t hc_post(const HcParams& p, const float* y, const float* R, const float* post, const float* comb,
                    int64_t S, float* X_new, cudaStream_t stream) {
  if (S < 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!y || !R || !post || !comb || !X_new || p.hc < 1 || p.hc > kMaxHc || p.D <= 0) return cudaErrorInvalidValue;
  const int64_t n = S * p.hc * p.D;
  if (X_new < R + n && R < X_new + n) return cudaErrorInvalidValue;  // X_new must not alias R
  hc_post_kernel<<<grid_for(n), kThreads, 0, stream>>>(p.hc, p.D, p.official, y, R, post, comb, S, X_new);
  return cudaGetLastError();
}

cudaError_t hc_head(const HcParams& p, const float* X, int64_t S, float* h, cudaStream_t stream) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!hc_params_ok(p) || !X || !h) return cudaErrorInvalidValue;
  if (S <= kFewRows)
    hc_head_kernel<kBigCta><<<static_cast<unsigned>(S), kBigCta, 0, stream>>>(p, X, h);
  else
    hc_head_kernel<kThreads><<<static_cast<unsigned>(S), kThreads, 0, stream>>>(p, X, h);
  return cudaGetLastError();
}

cudaError_t router(const RouterParams& p, const float* x, const int32_t* tokens, int64_t S, int32_t* ids,
                   float* weights, cudaStream_t stream) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!p.gate || !x || !ids || !weights || p.D <= 0 || p.E < 1 || p.E > kMaxE || p.K < 1 || p.K > kMaxK || p.K > p.E)
    return cudaErrorInvalidValue;
  if (p.tid2eid && (!tokens || p.tid2eid_cols < p.K)) return cudaErrorInvalidValue;
  router_kernel<<<static_cast<unsigned>(S), kThreads, 0, stream>>>(p, x, tokens, ids, weights);
  return cudaGetLastError();
}

cudaError_t swiglu(const float* g, const float* u, const int32_t* ids, const float* weights, int64_t rows, int64_t I,
                   float limit, bool clamp, bool official, float* h, cudaStream_t stream, int64_t gu_stride) {
  if (rows < 0 || gu_stride < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!g || !u || !h || I <= 0 || (clamp && !(limit > 0.0f))) return cudaErrorInvalidValue;
  const int64_t st = gu_stride ? gu_stride : I;
  if (st < I) return cudaErrorInvalidValue;
  swiglu_kernel<<<grid_for(rows * I), kThreads, 0, stream>>>(g, u, ids, weights, rows, I, limit, clamp, official, h, st);
  return cudaGetLastError();
}

cudaError_t moe_combine(const float* y_slot, const int32_t* ids, const float* weights, const float* y_shared, int64_t S,
                        int K, int64_t D, bool official, float* f, cudaStream_t stream, const int32_t* y_rows) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!y_slot || !ids || !y_shared || !f || K < 1 || K > kMaxK || D <= 0 || (!official && !weights))
    return cudaErrorInvalidValue;
  const int64_t slices = (D + kCombineCols - 1) / kCombineCols;
  if (slices > INT_MAX) return cudaErrorInvalidValue;
  for (int64_t s0 = 0; s0 < S; s0 += 65535) {  // grid.y holds at most 65535 tokens per launch
    const int64_t n = S - s0 < 65535 ? S - s0 : 65535;
    moe_combine_kernel<<<dim3(static_cast<unsigned>(slices), static_cast<unsigned>(n)), kThreads, 0, stream>>>(
        y_rows ? y_slot : y_slot + s0 * K * D, ids + s0 * K, weights ? weights + s0 * K : nullptr, y_shared + s0 * D, K,
        D, official, f + s0 * D, y_rows ? y_rows + s0 * K : nullptr);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaGetLastError();
}

}  // namespace dsv4::cuda
