// The dense (non-attention) kernels of the CUDA forward (contract: lib/cuda/kernels.hpp, section
// "dense_kernels.cu"): the linear layer in every checkpoint weight format, the embedding, RMSNorm
// and the per-head query norm, interleaved RoPE, the hyper-connection mixes (hc_pre with Sinkhorn,
// or split in its collapse and its Sinkhorn; hc_post, the head's collapse), the MoE router, SwiGLU
// and the expert combine; plus the decode fusions of the query and KV epilogues (norm + RoPE
// (+ KV FP8 simulation) in one launch, bit-identical to the launches they replace). Each mirrors the CPU
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
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "dsv4/numerics.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

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

// ---- per-token column kernels (embed, hc_post, swiglu, moe_combine): the launch shape -----------
// grid.y = row (token or slot; launches of at most kMaxRowsPerLaunch rows, the kernel adds r0),
// grid.x = CTAs over the row's `groups` column groups (V consecutive columns each: 16-byte vectors
// where the shapes and pointers allow), a grid-stride loop past kMaxColCtas. No division on the hot
// path. 256-thread CTAs, or 64-thread ones when the launch is small (decode: one token's 1024
// groups then spread over 16 SMs instead of 4).
constexpr int64_t kMaxRowsPerLaunch = 65535;
constexpr int64_t kMaxColCtas = 1 << 16;
constexpr int kSmallCta = 64;
struct ColGrid {
  unsigned x = 1;
  int threads = kThreads;
};
ColGrid col_grid(int64_t rows, int64_t groups) {
  ColGrid g;
  g.threads = rows * groups < (int64_t{1} << 16) ? kSmallCta : kThreads;
  const int64_t x = (groups + g.threads - 1) / g.threads;
  g.x = static_cast<unsigned>(x < kMaxColCtas ? (x > 0 ? x : 1) : kMaxColCtas);
  return g;
}
// Runs launch(r0, n) for the row chunks [r0, r0 + n) of [0, rows); stops at the first launch error.
template <class L>
cudaError_t for_row_chunks(int64_t rows, L&& launch) {
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxRowsPerLaunch) {
    const int64_t n = rows - r0 < kMaxRowsPerLaunch ? rows - r0 : kMaxRowsPerLaunch;
    launch(r0, static_cast<unsigned>(n));
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
__device__ __forceinline__ int64_t col_first() { return blockIdx.x * int64_t{blockDim.x} + threadIdx.x; }
__device__ __forceinline__ int64_t col_step() { return int64_t{gridDim.x} * blockDim.x; }
// V consecutive floats (V = 4: one 16-byte access, p 16-byte aligned).
template <int V>
__device__ __forceinline__ void load_f(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = p[e];
  }
}
template <int V>
__device__ __forceinline__ void store_f(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) p[e] = v[e];
  }
}

// X[s, j, d] = the decoded table value (bf16 rounded in official numerics: round_bf16, a no-op but
// for NaN payloads on a BF16 table, kept so the bits are the CPU twin's) for every stream j: one
// thread per V consecutive columns of token s (BF16: V = 8, one 16-byte load; F32: V = 4), all hc
// copies written by that thread (16-byte stores). V = 1: any D / alignment.
template <bool F32, int V>
__global__ void __launch_bounds__(kThreads) embed_kernel(const void* table, const int32_t* tokens, int64_t D, int hc,
                                                         bool official, int64_t r0, float* X) {
  const int64_t s = r0 + blockIdx.y;
  const int64_t t = tokens[s];
  float* Xs = X + s * hc * D;
  for (int64_t c = col_first(); c < D / V; c += col_step()) {
    const int64_t d = c * V;
    float v[V];
    if constexpr (F32) {
      const float* row = static_cast<const float*>(table) + t * D + d;
      if constexpr (V == 4) {
        const float4 q = __ldg(reinterpret_cast<const float4*>(row));
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
      } else {
        v[0] = __ldg(row);
      }
    } else {
      const uint16_t* row = static_cast<const uint16_t*>(table) + t * D + d;
      if constexpr (V == 8 || V == 4) {
        uint32_t w[V / 2];
        if constexpr (V == 8) {
          const uint4 q = __ldg(reinterpret_cast<const uint4*>(row));
          w[0] = q.x;
          w[1] = q.y;
          w[2] = q.z;
          w[3] = q.w;
        } else {
          const uint2 q = __ldg(reinterpret_cast<const uint2*>(row));
          w[0] = q.x;
          w[1] = q.y;
        }
#pragma unroll
        for (int e = 0; e < V / 2; ++e) {  // little-endian: element 2e in the low half
          v[2 * e] = bf16_to_f32(static_cast<uint16_t>(w[e] & 0xffffu));
          v[2 * e + 1] = bf16_to_f32(static_cast<uint16_t>(w[e] >> 16));
        }
      } else {
        v[0] = bf16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(row)));
      }
    }
    if (official) {
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = round_bf16(v[e]);
    }
    for (int j = 0; j < hc; ++j) {
      float* dst = Xs + j * D + d;
      if constexpr (V == 1) {
        dst[0] = v[0];
      } else {
#pragma unroll
        for (int e = 0; e < V; e += 4) *reinterpret_cast<float4*>(dst + e) = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
      }
    }
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

// rope.cpp's angle of one pair: θ = f32(pos)·inv_freq (the f32 product), its cos / sin in double.
__device__ __forceinline__ void rope_angle(int64_t pos, float inv_freq, double* sn, double* cs) {
  const float theta = static_cast<float>(pos) * inv_freq;
  sincos(static_cast<double>(theta), sn, cs);
}
// rope.cpp's rotation of the pair (a, b) in double (explicit _rn operations so no fused multiply-add
// changes the double rounding), stored to pv[0], pv[1] as f32 (bf16 when asked).
__device__ __forceinline__ void rope_rotate(float* pv, double a, double b, double sn, double cs, bool bf16_out) {
  float v0 = static_cast<float>(__dsub_rn(__dmul_rn(a, cs), __dmul_rn(b, sn)));
  float v1 = static_cast<float>(__dadd_rn(__dmul_rn(a, sn), __dmul_rn(b, cs)));
  if (bf16_out) {
    v0 = round_bf16(v0);
    v1 = round_bf16(v1);
  }
  pv[0] = v0;
  pv[1] = v1;
}

// The RoPE a fused norm applies to its rows: pairs (col + 2i, col + 2i + 1), i < half, of row r
// rotated at position p0 + r / rpp (forward, never inverse); half = 0: none.
struct RopeSpan {
  int64_t col = 0;
  int half = 0;
  const float* inv_freq = nullptr;
  int64_t p0 = 0, rpp = 1;
};

// Official per-head norm, one warp per row: exactly head_rms_norm_bf16 (dsv4/numerics.hpp), then
// (rope.half > 0) the bf16 RoPE of the normalised row, as rope() would apply it to the stored
// result. head_rms_norm_bf16's f32 sum is sequential in element order, a chain of n dependent adds
// that no other order reproduces; so the lanes load a pass of up to kHeadChunk values at once (one
// round of load latency), square-and-round them in parallel into shared memory, and every lane then
// adds the pass's terms in element order from there (broadcast reads, four per load): the chain
// itself is all that stays serial. The RoPE angles, which do not depend on the data, are computed
// first so that their double sincos overlaps the loads and the chain. WARPS rows per CTA: few at
// decode (64 heads of one token spread over 32 SMs), more for prefill's thousands of rows.
constexpr int kHeadChunk = 512;  // row values per pass (16 per lane): one Flash head

template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) head_norm_rope_bf16_kernel(float* q, int64_t rows, int64_t n, float eps,
                                                                         RopeSpan rope) {
  __shared__ __align__(16) float sq[WARPS][kHeadChunk];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * WARPS + warp;
  if (r >= rows) return;  // whole warp; no CTA-wide barrier follows
  float* row = q + r * n;
  float* sw = sq[warp];
  const int64_t pos = rope.p0 + r / rope.rpp;
  double sn0 = 0.0, cs0 = 1.0;  // this lane's first pair
  if (lane < rope.half) rope_angle(pos, rope.inv_freq[lane], &sn0, &cs0);

  float acc = 0.0f;
  for (int64_t base = 0; base < n; base += kHeadChunk) {
    const int m = n - base < kHeadChunk ? static_cast<int>(n - base) : kHeadChunk;
    float v[kHeadChunk / 32];
#pragma unroll
    for (int k = 0; k < kHeadChunk / 32; ++k) v[k] = lane + 32 * k < m ? row[base + lane + 32 * k] : 0.0f;
#pragma unroll
    for (int k = 0; k < kHeadChunk / 32; ++k) sw[lane + 32 * k] = round_bf16(v[k] * v[k]);
    __syncwarp();
    if (m == kHeadChunk) {
      const float4* s4 = reinterpret_cast<const float4*>(sw);
#pragma unroll 16
      for (int j = 0; j < kHeadChunk / 4; ++j) {
        const float4 t = s4[j];
        acc += t.x;
        acc += t.y;
        acc += t.z;
        acc += t.w;
      }
    } else {
      for (int j = 0; j < m; ++j) acc += sw[j];
    }
    __syncwarp();  // sw is rewritten by the next pass
  }
  const float s = round_bf16(acc / static_cast<float>(n));
  const float rr = round_bf16(1.0f / sqrtf(round_bf16(s + eps)));

  // Each value is read and rewritten by one lane only (every lane's reads of the sum passes are
  // behind the last __syncwarp).
  const int64_t c0 = rope.col, c1 = rope.col + 2 * int64_t{rope.half};
#pragma unroll 4
  for (int64_t i = lane; i < c0; i += 32) row[i] = round_bf16(row[i] * rr);
#pragma unroll 4
  for (int64_t i = c1 + lane; i < n; i += 32) row[i] = round_bf16(row[i] * rr);
  for (int i = lane; i < rope.half; i += 32) {
    double sn = sn0, cs = cs0;
    if (i != lane) rope_angle(pos, rope.inv_freq[i], &sn, &cs);
    float* pv = row + c0 + 2 * i;
    rope_rotate(pv, round_bf16(pv[0] * rr), round_bf16(pv[1] * rr), sn, cs, true);
  }
}

// One thread per rotated pair, rope.cpp's arithmetic (rope_angle, rope_rotate).
__global__ void rope_kernel(float* v, int64_t rows, int64_t stride, int64_t col, int half, const float* inv_freq,
                            int64_t p0, int64_t rows_per_position, bool inverse, bool bf16_out) {
  const int64_t n = rows * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / half;
    const int i = static_cast<int>(idx % half);
    double sn, cs;
    rope_angle(p0 + r / rows_per_position, inv_freq[i], &sn, &cs);
    if (inverse) sn = -sn;
    float* pv = v + r * stride + col + 2 * i;
    rope_rotate(pv, pv[0], pv[1], sn, cs, bf16_out);
  }
}

// rms_norm_kernel<NT>'s row, then RoPE and (fp8) the KV FP8 simulation on the stored values, one
// CTA per row: what rms_norm, rope and kv_fp8_simulate compute one launch after the other, bit for
// bit — the sum of squares is rms_norm_kernel's (same loop, same block_sum<NT>), every element is
// its formula, the rope pairs are rotated from the values the norm would have stored, and the FP8
// blocks of 64 over [0, rope.col) are kv_fp8_simulate's (attention_kernels.cu, warp_block_qdq: the
// same amax → e8m0 scale → e4m3 → bf16 steps, one warp per block; the block maximum does not depend
// on the order it is taken in). The regions are disjoint, so no thread waits for another after the
// sum: warps from the first take the FP8 blocks, threads from the last the rope pairs (their angles
// computed before the sum, overlapping its loads), everyone the plain values. In place (out == x,
// same stride) is safe: each value is read and written by one thread after block_sum's barriers.
template <int NT>
__global__ void __launch_bounds__(NT, 1) rms_norm_rope_kernel(const float* x, int64_t x_stride, const float* w, int64_t n,
                                                           float eps, bool bf16_out, float* out, int64_t out_stride,
                                                           RopeSpan rope, bool fp8) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * x_stride;
  float* orow = out + r * out_stride;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int64_t pos = rope.p0 + r / rope.rpp;
  const int64_t pr = NT - 1 - tid;  // this thread's first rope pair
  double sn0 = 0.0, cs0 = 1.0;
  if (pr < rope.half) rope_angle(pos, rope.inv_freq[pr], &sn0, &cs0);

  float ss = 0.0f;
#pragma unroll 8
  for (int64_t i = tid; i < n; i += NT) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum<NT>(ss);
  const double rn = 1.0 / sqrt(static_cast<double>(ss) / static_cast<double>(n) + static_cast<double>(eps));
  auto norm = [&](int64_t i) {  // rms_norm_kernel's value of element i
    const float v = static_cast<float>(w ? static_cast<double>(w[i]) * xr[i] * rn : xr[i] * rn);
    return bf16_out ? round_bf16(v) : v;
  };

  const int64_t c0 = rope.col, c1 = rope.col + 2 * int64_t{rope.half};
  if (fp8) {
    for (int64_t b0 = int64_t{warp} * 64; b0 < c0; b0 += int64_t{NT / 32} * 64) {
      const int64_t e = b0 + 64 < c0 ? b0 + 64 : c0;
      const int64_t i0 = b0 + lane, i1 = b0 + 32 + lane;
      const float v0 = i0 < e ? norm(i0) : 0.0f, v1 = i1 < e ? norm(i1) : 0.0f;
      float amax = fmaxf(fmaxf(0.0f, fabsf(v0)), fabsf(v1));
      amax = warp_max_nonneg(amax);
      const float sc = e8m0_to_f32(fp8_act_scale_e8m0(amax));
      auto qdq = [sc](float v) {
        v = v / sc;  // exact: sc is a power of two
        v = v > 448.0f ? 448.0f : (v < -448.0f ? -448.0f : v);
        return round_bf16(e4m3_to_f32(f32_to_e4m3(v)) * sc);
      };
      if (i0 < e) orow[i0] = qdq(v0);
      if (i1 < e) orow[i1] = qdq(v1);
    }
  } else {
    for (int64_t i = tid; i < c0; i += NT) orow[i] = norm(i);
  }
  for (int64_t i = c1 + tid; i < n; i += NT) orow[i] = norm(i);
  for (int64_t i = pr; i < rope.half; i += NT) {
    double sn = sn0, cs = cs0;
    if (i != pr) rope_angle(pos, rope.inv_freq[i], &sn, &cs);
    float* pv = orow + c0 + 2 * i;
    rope_rotate(pv, norm(c0 + 2 * i), norm(c0 + 2 * i + 1), sn, cs, bf16_out);
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

// x_out[d] = Σ_j pre[j]·X[j, d] in double, j ascending (hc.cpp's collapse), for the columns
// d = d_first, d_first + d_step, … < D.
__device__ __forceinline__ void hc_collapse_cols(const double* pre, const float* X, int hc, int64_t D, bool official,
                                                 float* out, int64_t d_first, int64_t d_step) {
#pragma unroll 4
  for (int64_t d = d_first; d < D; d += d_step) {
    double acc = 0.0;
    for (int j = 0; j < hc; ++j) acc += pre[j] * X[j * D + d];
    out[d] = official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  }
}
template <int NT>
__device__ void hc_collapse(const double* pre, const float* X, int hc, int64_t D, bool official, float* out) {
  hc_collapse_cols(pre, X, hc, D, official, out, threadIdx.x, NT);
}

// hc.cpp's gates from the token's mixes m (double): pre_j = σ(m_j·s0 + b_j) + eps weighs stream j in
// the collapse, post_j = 2σ(m_{hc+j}·s1 + b_{hc+j}) in hc_post, and the comb logits
// m_{2hc+k}·s2 + b_{2hc+k} start the Sinkhorn. One definition for every kernel that computes them.
__device__ __forceinline__ double hc_gate_pre(const HcParams& p, double mj, int j) {
  return sigmoid_d(mj * static_cast<double>(p.scale[0]) + static_cast<double>(p.base[j])) +
         static_cast<double>(p.hc_eps);
}
__device__ __forceinline__ float hc_gate_post(const HcParams& p, double mj, int j) {
  return static_cast<float>(2.0 * sigmoid_d(mj * static_cast<double>(p.scale[1]) + static_cast<double>(p.base[p.hc + j])));
}
__device__ __forceinline__ double hc_comb_logit(const HcParams& p, double mk, int k) {
  return mk * static_cast<double>(p.scale[2]) + static_cast<double>(p.base[2 * p.hc + k]);
}

// The scalar part of hc_pre, statement by statement as hc.cpp (double): pre / post gates, then the
// comb matrix's row softmax + eps, column normalisation and (iters − 1) × (row, column).
// One thread (any hc ≤ kMaxHc). pre may be null (not wanted).
__device__ void hc_scalar_serial(const HcParams& p, const double* m, int64_t s, double* pre, double* C, float* post,
                                 float* comb) {
  const int hc = p.hc;
  const double eps = p.hc_eps;
  for (int j = 0; j < hc; ++j) {
    if (pre) pre[j] = hc_gate_pre(p, m[j], j);
    post[s * hc + j] = hc_gate_post(p, m[hc + j], j);
  }
  for (int k = 0; k < hc * hc; ++k) C[k] = hc_comb_logit(p, m[2 * hc + k], k);
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

// The same for hc·hc ≤ 32 on one warp, HC = hc known at compile time: lane j·HC + k holds C[j, k]
// in a register. A row (column) sum is still taken by each lane in the serial order — 0 + C[j, 0] +
// C[j, 1] + … — over values fetched by shuffles that all issue at once, and each element is divided
// by the same double, so the result is bit-identical to hc_scalar_serial; only the independent
// divisions and exps run in parallel. What stays serial per half-iteration is one shuffle round,
// HC + 1 adds and one division (no shared-memory round trips, no __syncwarp: the chain of 20
// Sinkhorn iterations was most of hc_pre's decode time). Lanes ≥ HC·HC compute garbage they never
// store (their shuffle sources wrap modulo 32).
template <int HC>
__device__ __forceinline__ double hc_row_sum(double c, int j) {
  double v[HC];
#pragma unroll
  for (int t = 0; t < HC; ++t) v[t] = __shfl_sync(kFullMask, c, j * HC + t);
  double sum = 0;
#pragma unroll
  for (int t = 0; t < HC; ++t) sum += v[t];
  return sum;
}
template <int HC>
__device__ __forceinline__ double hc_col_sum(double c, int k) {
  double v[HC];
#pragma unroll
  for (int t = 0; t < HC; ++t) v[t] = __shfl_sync(kFullMask, c, t * HC + k);
  double sum = 0;
#pragma unroll
  for (int t = 0; t < HC; ++t) sum += v[t];
  return sum;
}
template <int HC>
__device__ void hc_scalar_warp_n(const HcParams& p, const double* m, int64_t s, double* pre, float* post,
                                 float* comb) {
  static_assert(HC * HC <= 32, "one lane per comb entry");
  const int lane = static_cast<int>(threadIdx.x % 32);
  const bool own = lane < HC * HC;
  const int j = lane / HC, k = lane % HC;
  const double eps = p.hc_eps;
  if (lane < HC) {
    const double g = hc_gate_pre(p, m[lane], lane);
    if (pre) pre[lane] = g;
    post[s * HC + lane] = hc_gate_post(p, m[HC + lane], lane);
  }
  double c = own ? hc_comb_logit(p, m[2 * HC + lane], lane) : 0.0;
  // Row softmax + eps.
  double v[HC];
#pragma unroll
  for (int t = 0; t < HC; ++t) v[t] = __shfl_sync(kFullMask, c, j * HC + t);
  double mx = v[0];
#pragma unroll
  for (int t = 1; t < HC; ++t) mx = v[t] > mx ? v[t] : mx;
  c = exp(c - mx);
  c = c / hc_row_sum<HC>(c, j) + eps;
  c /= hc_col_sum<HC>(c, k) + eps;
  for (int it = 1; it < p.sinkhorn_iters; ++it) {
    c /= hc_row_sum<HC>(c, j) + eps;
    c /= hc_col_sum<HC>(c, k) + eps;
  }
  if (own) comb[s * HC * HC + lane] = static_cast<float>(c);
}
// Every lane of one warp calls (hc·hc ≤ 32); pre may be null.
__device__ void hc_scalar_warp(const HcParams& p, const double* m, int64_t s, double* pre, float* post, float* comb) {
  switch (p.hc) {
    case 1: hc_scalar_warp_n<1>(p, m, s, pre, post, comb); break;
    case 2: hc_scalar_warp_n<2>(p, m, s, pre, post, comb); break;
    case 3: hc_scalar_warp_n<3>(p, m, s, pre, post, comb); break;
    case 4: hc_scalar_warp_n<4>(p, m, s, pre, post, comb); break;
    default: hc_scalar_warp_n<5>(p, m, s, pre, post, comb); break;
  }
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
    if (threadIdx.x < 32) hc_scalar_warp(p, m, s, pre, post, comb);
  } else if (threadIdx.x == 0) {
    hc_scalar_serial(p, m, s, pre, C, post, comb);
  }
  __syncthreads();
  hc_collapse<NT>(pre, Xs, hc, p.D, p.official, x_out + s * p.D);
}

// hc_pre's first half for prefill (S > kFewRows: hc_pre runs kThreads-thread CTAs), one CTA per
// token: the same hc_mixes<NT> (from the partials), the pre gates and hc_collapse<NT> — hence the
// same bits — and the mixes written out for hc_pre_sinkhorn.
template <int NT>
__global__ void __launch_bounds__(NT) hc_pre_collapse_kernel(HcParams p, const float* X, float* x_out,
                                                             double* mix_out) {
  __shared__ double m[kMaxMix];
  __shared__ double pre[kMaxHc];
  const int hc = p.hc, mix = (2 + hc) * hc;
  const int64_t s = blockIdx.x, width = hc * p.D;
  const float* Xs = X + s * width;
  hc_mixes<NT>(Xs, p.fn, width, mix, p.norm_eps, m, p.partials + s * hc * mix, hc);
  for (int i = threadIdx.x; i < mix; i += NT) mix_out[s * mix + i] = m[i];
  if (threadIdx.x < hc) pre[threadIdx.x] = hc_gate_pre(p, m[threadIdx.x], threadIdx.x);
  __syncthreads();
  hc_collapse<NT>(pre, Xs, hc, p.D, p.official, x_out + s * p.D);
}

// hc_pre's first half at decode (S ≤ kFewRows: hc_pre runs one kBigCta-thread CTA per token), spread
// over a cluster of kHcCluster CTAs per token so that no SM reads more than its share of the
// token's hc·D values. Thread t of rank q stands in for thread q·kHcClusterThreads + t of hc_pre's
// CTA: the same f32 chain over X[vt], X[vt + kBigCta], …, the same warp_sum, and block_sum's second
// stage over the 32 warp partials — lane l reads hc_pre's warp l from rank l / 4's shared memory
// (distributed shared memory) — so the sum of squares, 1/rms, the mixes (partials summed as
// hc_mixes does, loaded before the sum so their latency overlaps it), the pre gates and the
// collapse (columns vt, vt + kBigCta, … as hc_collapse<kBigCta>) are hc_pre's bits.
constexpr int kHcCluster = 8;
constexpr int kHcClusterThreads = kBigCta / kHcCluster;  // 128
constexpr int kHcClusterWarps = kHcClusterThreads / 32;
static_assert(kBigCta / 32 == 32, "block_sum<kBigCta>'s second stage takes one warp partial per lane");

__global__ void __cluster_dims__(kHcCluster, 1, 1) __launch_bounds__(kHcClusterThreads)
    hc_pre_collapse_cluster_kernel(HcParams p, const float* X, float* x_out, double* mix_out) {
  __shared__ float part[kHcClusterWarps];
  __shared__ double pre[kMaxHc];
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int hc = p.hc, mix = (2 + hc) * hc;
  const int64_t s = blockIdx.y, D = p.D, width = hc * D;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int vt = rank * kHcClusterThreads + tid;  // hc_pre's thread
  const float* Xs = X + s * width;
  const float* ps = p.partials + s * hc * mix;
  float acc_mix = 0.0f, acc_pre = 0.0f;  // mix vt (written out) and mix tid (a pre gate), f32, j ascending
  if (vt < mix)
    for (int j = 0; j < hc; ++j) acc_mix += ps[j * mix + vt];
  if (tid < hc)
    for (int j = 0; j < hc; ++j) acc_pre += ps[j * mix + tid];

  float ss = 0.0f;
#pragma unroll 8
  for (int64_t i = vt; i < width; i += kBigCta) ss = fmaf(Xs[i], Xs[i], ss);
  ss = warp_sum(ss);
  if (lane == 0) part[warp] = ss;
  cluster.sync();  // every rank's warp partials are in place
  float t = *cluster.map_shared_rank(&part[lane % kHcClusterWarps], lane / kHcClusterWarps);
  t = warp_sum(t);
  cluster.barrier_arrive();  // done with the other ranks' shared memory (waited for before exit)
  const double r = 1.0 / sqrt(static_cast<double>(t) / static_cast<double>(width) + static_cast<double>(p.norm_eps));
  if (vt < mix) mix_out[s * mix + vt] = static_cast<double>(acc_mix) * r;
  if (tid < hc) pre[tid] = hc_gate_pre(p, static_cast<double>(acc_pre) * r, tid);
  __syncthreads();
  hc_collapse_cols(pre, Xs, hc, D, p.official, x_out + s * D, vt, kBigCta);
  cluster.barrier_wait();  // no CTA leaves while another may still read its part[]
}

// hc_pre's second half: one warp per token, from the mixes hc_pre_collapse wrote (the warp
// Sinkhorn for hc·hc ≤ 32 unless `serial`, else hc_scalar_serial on lane 0).
constexpr int kSinkWarps = 4;
__global__ void __launch_bounds__(kSinkWarps * 32) hc_pre_sinkhorn_kernel(HcParams p, const double* mix, int64_t S,
                                                                         float* post, float* comb, bool serial) {
  __shared__ double C[kSinkWarps][kMaxHc * kMaxHc];
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int64_t s = static_cast<int64_t>(blockIdx.x) * kSinkWarps + warp;
  if (s >= S) return;  // whole warp
  const int hc = p.hc;
  const double* m = mix + s * (2 + hc) * hc;
  if (!serial && hc * hc <= 32) hc_scalar_warp(p, m, s, nullptr, post, comb);
  else if (lane == 0) hc_scalar_serial(p, m, s, nullptr, C[warp], post, comb);
}

// X_new[s, k, d] = double(post[s, k])·y[s, d] + Σ_j double(comb[s, j, k])·R[s, j, d] (j ascending),
// rounded to f32 (official: then bf16) — hc.cpp's arithmetic per output, so bit-identical (every
// product is of two floats, exact in double: fused or not, each add rounds the same sum). One
// thread per (token s = r0 + blockIdx.y, V consecutive columns): it loads y and the hc source values
// R[s, j] once (16-byte vectors for V = 4) and writes all hc outputs, instead of one thread per
// output re-reading all of R[s, ·, d]. HC > 0: hc at compile time (post / comb and the R vectors in
// registers); HC = 0: any hc ≤ kMaxHc (the R values re-read per output, from L1).
template <int HC, int V>
__global__ void __launch_bounds__(kThreads) hc_post_kernel(int hc_rt, int64_t D, bool official, const float* y,
                                                           const float* R, const float* post, const float* comb,
                                                           int64_t r0, float* X_new) {
  const int hc = HC > 0 ? HC : hc_rt;
  const int64_t s = r0 + blockIdx.y;
  const float* ys = y + s * D;
  const float* Rs = R + s * hc * D;
  const float* ps = post + s * hc;
  const float* cs = comb + s * hc * hc;
  float* Xs = X_new + s * hc * D;
  auto out = [official](double acc) {
    return official ? round_bf16(static_cast<float>(acc)) : static_cast<float>(acc);
  };
  if constexpr (HC > 0) {
    float pv[HC], cv[HC * HC];
#pragma unroll
    for (int k = 0; k < HC; ++k) pv[k] = ps[k];
#pragma unroll
    for (int k = 0; k < HC * HC; ++k) cv[k] = cs[k];
    for (int64_t c = col_first(); c < D / V; c += col_step()) {
      const int64_t d = c * V;
      float yv[V], rv[HC][V];
      load_f<V>(ys + d, yv);
#pragma unroll
      for (int j = 0; j < HC; ++j) load_f<V>(Rs + j * D + d, rv[j]);
#pragma unroll
      for (int k = 0; k < HC; ++k) {
        float o[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          double acc = static_cast<double>(pv[k]) * yv[e];
#pragma unroll
          for (int j = 0; j < HC; ++j) acc += static_cast<double>(cv[j * HC + k]) * rv[j][e];
          o[e] = out(acc);
        }
        store_f<V>(Xs + k * D + d, o);
      }
    }
  } else {
    for (int64_t c = col_first(); c < D / V; c += col_step()) {
      const int64_t d = c * V;
      float yv[V];
      load_f<V>(ys + d, yv);
      for (int k = 0; k < hc; ++k) {
        float o[V];
        double acc[V];
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = static_cast<double>(ps[k]) * yv[e];
        for (int j = 0; j < hc; ++j) {
          float rv[V];
          load_f<V>(Rs + j * D + d, rv);
          const double cjk = cs[j * hc + k];
#pragma unroll
          for (int e = 0; e < V; ++e) acc[e] += cjk * rv[e];
        }
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = out(acc[e]);
        store_f<V>(Xs + k * D + d, o);
      }
    }
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

// run_expert's SwiGLU of one element (official in f32 with the routing weight wr (1 without weights)
// and one bf16 rounding; reference in double) — the expressions of the per-element kernel this
// replaced, unchanged.
__device__ __forceinline__ float swiglu_elem(float gf, float uf, float wr, float limit, bool clamp, bool official) {
  if (official) {
    float gv = gf, uv = uf;
    if (clamp) {
      gv = limit < gv ? limit : gv;                           // std::min(gv, limit)
      uv = uv < -limit ? -limit : (limit < uv ? limit : uv);  // std::clamp(uv, ±limit)
    }
    const float sw = gv / (1.0f + expf(-gv)) * uv;
    return round_bf16(wr * sw);
  }
  double gv = gf, uv = uf;
  const double l = limit;
  if (clamp) {
    gv = l < gv ? l : gv;  // gate: from above only
    uv = uv < -l ? -l : (l < uv ? l : uv);
  }
  return static_cast<float>(gv / (1.0 + exp(-gv)) * uv);
}

// One CTA row per slot row r = r0 + blockIdx.y (skipped whole when ids[r] < 0), V consecutive
// columns per thread (V = 4: 16-byte loads of g and u and store of h). h may alias g when st == I:
// each thread rewrites only what it read (plain loads, not the read-only path).
template <int V>
__global__ void __launch_bounds__(kThreads) swiglu_kernel(const float* g, const float* u, const int32_t* ids,
                                                          const float* weights, int64_t I, float limit, bool clamp,
                                                          bool official, float* h, int64_t st, int64_t r0) {
  const int64_t r = r0 + blockIdx.y;
  if (ids && ids[r] < 0) return;  // the whole CTA: no barrier follows
  const float wr = weights ? weights[r] : 1.0f;
  const float* gr = g + r * st;
  const float* ur = u + r * st;
  float* hr = h + r * I;
  for (int64_t c = col_first(); c < I / V; c += col_step()) {
    const int64_t i = c * V;
    float gv[V], uv[V], o[V];
    load_f<V>(gr + i, gv);
    load_f<V>(ur + i, uv);
#pragma unroll
    for (int e = 0; e < V; ++e) o[e] = swiglu_elem(gv[e], uv[e], wr, limit, clamp, official);
    store_f<V>(hr + i, o);
  }
}

// CTAs (blockIdx.x = a kCombineCols column slice, blockIdx.y = token s = r0 + blockIdx.y): thread 0
// orders the token's valid slots by expert id (insertion sort, stable) and writes their y_slot row
// offsets and weights to shared memory, then every thread sums its V consecutive columns (V = 4:
// 16-byte loads) in that order — up to 8 slot rows loaded before the adds — the shared expert last:
// per element the f32 operations of moe.cpp, in its order. Several CTAs per token so a decode step's
// one token still spreads over the SMs.
constexpr int64_t kCombineCols = 512;
constexpr int kCombineBatch = 8;  // slot rows in flight per thread
template <int V>
__global__ void __launch_bounds__(kThreads) moe_combine_kernel(const float* y_slot, const int32_t* ids,
                                                               const float* weights, const float* y_shared, int K,
                                                               int64_t D, bool official, float* f,
                                                               const int32_t* y_rows, int64_t r0) {
  __shared__ int order[kMaxK];
  __shared__ int64_t row_off[kMaxK];
  __shared__ float wt[kMaxK];
  __shared__ int n_valid;
  const int64_t s = r0 + blockIdx.y;
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
    for (int t = 0; t < n; ++t) {
      const int k = order[t];
      row_off[t] = (y_rows ? int64_t{y_rows[s * K + k]} : s * K + k) * D;
      wt[t] = official ? 0.0f : weights[s * K + k];  // official: unused (weights may be null)
    }
    n_valid = n;
  }
  __syncthreads();
  const int n = n_valid;
  const int64_t d_end = (blockIdx.x + 1) * kCombineCols < D ? (blockIdx.x + 1) * kCombineCols : D;
  for (int64_t d = blockIdx.x * kCombineCols + int64_t{threadIdx.x} * V; d < d_end; d += int64_t{blockDim.x} * V) {
    float sh[V], acc[V];
    if (y_shared) load_f<V>(y_shared + s * D + d, sh);
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0.0f;
    for (int t0 = 0; t0 < n; t0 += kCombineBatch) {
      float yv[kCombineBatch][V];
#pragma unroll
      for (int b = 0; b < kCombineBatch; ++b)
        if (t0 + b < n) load_f<V>(y_slot + row_off[t0 + b] + d, yv[b]);
#pragma unroll
      for (int b = 0; b < kCombineBatch; ++b) {
        if (t0 + b >= n) break;
        const float w = wt[t0 + b];
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = official ? acc[e] + yv[b][e] : fmaf(w, yv[b][e], acc[e]);
      }
    }
    float o[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if (!y_shared) {  // an expert-parallel rank's partial sum: f32, no shared expert, no rounding
        o[e] = acc[e];
        continue;
      }
      const float a = acc[e] + sh[e];
      o[e] = official ? round_bf16(a) : a;
    }
    store_f<V>(f + s * D + d, o);
  }
}

// ---- launch helpers -------------------------------------------------------------------------

// The official head norm (+ RoPE), one warp per row: 2 rows per CTA while that gives at most 1024
// CTAs (decode's 64 heads become 32 CTAs on as many SMs), else 8.
cudaError_t launch_head_norm_bf16(float* q, int64_t rows, int64_t n, float eps, const RopeSpan& rope,
                                  cudaStream_t stream) {
  constexpr int kFewWarps = 2;
  if (rows <= int64_t{1024} * kFewWarps) {
    const int64_t blocks = (rows + kFewWarps - 1) / kFewWarps;
    head_norm_rope_bf16_kernel<kFewWarps><<<static_cast<unsigned>(blocks), kFewWarps * 32, 0, stream>>>(q, rows, n,
                                                                                                       eps, rope);
  } else {
    const int64_t blocks = (rows + kWarps - 1) / kWarps;
    if (blocks > INT_MAX) return cudaErrorInvalidValue;
    head_norm_rope_bf16_kernel<kWarps><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(q, rows, n, eps, rope);
  }
  return cudaGetLastError();
}
// rms_norm_rope_kernel with rms_norm's CTA size for the row count (so its sum of squares is
// rms_norm's).
cudaError_t launch_rms_norm_rope(const float* x, int64_t x_stride, const float* w, int64_t rows, int64_t n, float eps,
                                 bool bf16_out, float* out, int64_t out_stride, const RopeSpan& rope, bool fp8,
                                 cudaStream_t stream) {
  if (rows <= kFewRows)
    rms_norm_rope_kernel<kBigCta><<<static_cast<unsigned>(rows), kBigCta, 0, stream>>>(x, x_stride, w, n, eps, bf16_out,
                                                                                       out, out_stride, rope, fp8);
  else
    rms_norm_rope_kernel<kThreads><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        x, x_stride, w, n, eps, bf16_out, out, out_stride, rope, fp8);
  return cudaGetLastError();
}
bool rope_span_ok(int64_t n, int64_t col, int rd, const float* inv_freq) {
  return inv_freq && rd > 0 && rd % 2 == 0 && col >= 0 && col <= n - rd;
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
  // The widest vector the shapes allow: 16-byte table loads and X stores need D a multiple of the
  // vector and both arrays 16-byte aligned (BF16 with D % 8 == 4: 8-byte loads, V = 4).
  const bool x16 = D % 4 == 0 && aligned(X, 16);
  auto go = [&](auto kernel, int V) {
    const ColGrid g = col_grid(S, D / V);
    return for_row_chunks(S, [&](int64_t r0, unsigned n) {
      kernel<<<dim3(g.x, n), g.threads, 0, stream>>>(table, tokens, D, hc, official, r0, X);
    });
  };
  if (is_f32) {
    if (x16 && aligned(table, 16)) return go(embed_kernel<true, 4>, 4);
    return go(embed_kernel<true, 1>, 1);
  }
  if (x16 && D % 8 == 0 && aligned(table, 16)) return go(embed_kernel<false, 8>, 8);
  if (x16 && aligned(table, 8)) return go(embed_kernel<false, 4>, 4);
  return go(embed_kernel<false, 1>, 1);
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
  return launch_head_norm_bf16(q, rows, n, eps, RopeSpan{}, stream);
}

cudaError_t head_rms_norm_rope(float* q, int64_t rows, int64_t n, float eps, bool official, int64_t col, int rd,
                               const float* inv_freq, int64_t p0, int64_t rows_per_position, cudaStream_t stream) {
  if (rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (!q || n <= 0 || !rope_span_ok(n, col, rd, inv_freq) || rows_per_position <= 0) return cudaErrorInvalidValue;
  const RopeSpan rope{col, rd / 2, inv_freq, p0, rows_per_position};
  if (official) return launch_head_norm_bf16(q, rows, n, eps, rope, stream);
  return launch_rms_norm_rope(q, n, nullptr, rows, n, eps, false, q, n, rope, false, stream);
}

cudaError_t kv_norm_rope_fp8(const float* x, int64_t x_stride, const float* w, int64_t S, int64_t n, float eps,
                             bool official, int64_t col, int rd, const float* inv_freq, int64_t p0, float* out,
                             int64_t out_stride, cudaStream_t stream) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!x || !out || n <= 0 || x_stride < n || out_stride < n || !rope_span_ok(n, col, rd, inv_freq))
    return cudaErrorInvalidValue;
  const RopeSpan rope{col, rd / 2, inv_freq, p0, 1};
  return launch_rms_norm_rope(x, x_stride, w, S, n, eps, official, out, out_stride, rope, official, stream);
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

cudaError_t hc_pre_collapse(const HcParams& p, const float* X, int64_t S, float* x_out, double* mix_out,
                            cudaStream_t stream) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!hc_params_ok(p) || !p.partials || !X || !x_out || !mix_out) return cudaErrorInvalidValue;
  if (S <= kFewRows)  // hc_pre's kBigCta CTA per token, as a cluster
    hc_pre_collapse_cluster_kernel<<<dim3(kHcCluster, static_cast<unsigned>(S)), kHcClusterThreads, 0, stream>>>(
        p, X, x_out, mix_out);
  else
    hc_pre_collapse_kernel<kThreads><<<static_cast<unsigned>(S), kThreads, 0, stream>>>(p, X, x_out, mix_out);
  return cudaGetLastError();
}

cudaError_t hc_pre_sinkhorn(const HcParams& p, const double* mix, int64_t S, float* post, float* comb,
                            cudaStream_t stream, bool serial) {
  if (S < 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!p.base || !p.scale || p.hc < 1 || p.hc > kMaxHc || p.sinkhorn_iters < 0 || !mix || !post || !comb)
    return cudaErrorInvalidValue;
  const int64_t blocks = (S + kSinkWarps - 1) / kSinkWarps;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  hc_pre_sinkhorn_kernel<<<static_cast<unsigned>(blocks), kSinkWarps * 32, 0, stream>>>(p, mix, S, post, comb, serial);
  return cudaGetLastError();
}

cudaError_t hc_post(const HcParams& p, const float* y, const float* R, const float* post, const float* comb,
                    int64_t S, float* X_new, cudaStream_t stream) {
  if (S < 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!y || !R || !post || !comb || !X_new || p.hc < 1 || p.hc > kMaxHc || p.D <= 0) return cudaErrorInvalidValue;
  const int64_t n = S * p.hc * p.D;
  if (X_new < R + n && R < X_new + n) return cudaErrorInvalidValue;  // X_new must not alias R
  // 16-byte vectors where D % 4 == 0 and y, R, X_new are 16-byte aligned; hc 2 and 4 (the
  // model's) with post / comb / R in registers.
  const bool vec = p.D % 4 == 0 && aligned(y, 16) && aligned(R, 16) && aligned(X_new, 16);
  auto go = [&](auto kernel, int V) {
    const ColGrid g = col_grid(S, p.D / V);
    return for_row_chunks(S, [&](int64_t r0, unsigned rows) {
      kernel<<<dim3(g.x, rows), g.threads, 0, stream>>>(p.hc, p.D, p.official, y, R, post, comb, r0, X_new);
    });
  };
  switch (p.hc) {
    case 4: return vec ? go(hc_post_kernel<4, 4>, 4) : go(hc_post_kernel<4, 1>, 1);
    case 2: return vec ? go(hc_post_kernel<2, 4>, 4) : go(hc_post_kernel<2, 1>, 1);
    default: return vec ? go(hc_post_kernel<0, 4>, 4) : go(hc_post_kernel<0, 1>, 1);
  }
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
  // 16-byte vectors where the rows allow (I and the g / u row stride multiples of 4, 16-byte
  // aligned arrays).
  const bool vec = I % 4 == 0 && st % 4 == 0 && aligned(g, 16) && aligned(u, 16) && aligned(h, 16);
  auto go = [&](auto kernel, int V) {
    const ColGrid cg = col_grid(rows, I / V);
    return for_row_chunks(rows, [&](int64_t r0, unsigned n) {
      kernel<<<dim3(cg.x, n), cg.threads, 0, stream>>>(g, u, ids, weights, I, limit, clamp, official, h, st, r0);
    });
  };
  return vec ? go(swiglu_kernel<4>, 4) : go(swiglu_kernel<1>, 1);
}

cudaError_t moe_combine(const float* y_slot, const int32_t* ids, const float* weights, const float* y_shared, int64_t S,
                        int K, int64_t D, bool official, float* f, cudaStream_t stream, const int32_t* y_rows) {
  if (S < 0 || S > INT_MAX) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!y_slot || !ids || !f || K < 1 || K > kMaxK || D <= 0 || (!official && !weights))
    return cudaErrorInvalidValue;
  const int64_t slices = (D + kCombineCols - 1) / kCombineCols;
  if (slices > INT_MAX) return cudaErrorInvalidValue;
  // 16-byte vectors (kCombineCols / 4 = 128 threads per slice) where D % 4 == 0 and the arrays are
  // 16-byte aligned, else 256 threads of single columns.
  const bool vec = D % 4 == 0 && aligned(y_slot, 16) && (!y_shared || aligned(y_shared, 16)) && aligned(f, 16);
  return for_row_chunks(S, [&](int64_t r0, unsigned n) {
    const dim3 grid(static_cast<unsigned>(slices), n);
    if (vec)
      moe_combine_kernel<4><<<grid, static_cast<int>(kCombineCols / 4), 0, stream>>>(y_slot, ids, weights, y_shared,
                                                                                    K, D, official, f, y_rows, r0);
    else
      moe_combine_kernel<1><<<grid, kThreads, 0, stream>>>(y_slot, ids, weights, y_shared, K, D, official, f, y_rows,
                                                          r0);
  });
}

}  // namespace dsv4::cuda
