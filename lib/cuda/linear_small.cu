// The decode path of `linear` (contract: lib/cuda/kernels.hpp, "linear_small.cu"): y = x'·Wᵀ for
// at most kLinearSmallMaxRows rows, bandwidth-bound on the checkpoint's row-major weights.
//
// Structure. A CTA of 8 warps owns a contiguous run of output tiles (a tile = 8·C output rows of
// one column group, C consecutive rows per warp) and one K slice [k0, k0 + KL) of the input, whose
// R input rows it stages (FP8 1×128 quantise-dequantised when asked) once into shared memory and
// reuses for all its tiles (restaged only when a tile enters another out_group group). A warp
// streams its C weight rows over the slice with 16-byte non-coherent loads, lane l taking chunks
// l, l+32, ... (each warp-wide load is 512 contiguous bytes of a row), U·C loads per lane per round
// with the next round's (of this tile or the next) requested before this one is computed, and applies every decoded weight to all R rows (each weight byte is read once for all rows).
// Decoding: e4m3 pairs with the hardware cvt (e4m3x2 → f16x2, exact) then f16 → f32 (exact);
// e2m1 by shifts to e4m3 bytes worth value·2⁻⁶ (exact; 2⁶ rides on the scale), then as e4m3;
// bf16 by shifts. The weight is multiplied by its power-of-two block scale in f32 per 16-byte chunk
// (kFold) or per weight — either way each product is the very x·WeightView::at.
// Split-K: when one CTA's K slice cannot hold all of K (R rows × K f32 over 96 KB) or when the
// output is too small to keep every SM busy, SC ≤ 8 CTAs of a thread-block cluster take one K
// slice each of the same tiles; their per-output partials meet in distributed shared memory and
// are summed in rank order by the cluster (deterministic, no atomics, no global scratch).
// Expert stacks: every row is its own weight stream (grid z = row, R = 1).
//
// Shared memory holds the staged rows with a per-chunk XOR swizzle of their 16-byte quads so
// that the 128-bit reads of the 8 lanes of a quarter-warp fall on distinct bank groups.
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "dsv4/numerics.hpp"
#include "kernels.hpp"
#include "warp_util.cuh"
#include "func_attr.hpp"

namespace dsv4::cuda {
namespace {
namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;
constexpr int kStageBytes = 96 * 1024;  // staged input rows per CTA: two CTAs fit an SM
constexpr int kMaxC = 4;
constexpr int kSmemCap = kStageBytes + 2 * kWarps * kMaxC * 16 * 4;  // + the split-K exchange

template <WeightFormat F> constexpr int kE = F == WeightFormat::f32 ? 4 : F == WeightFormat::bf16 ? 8
                                             : F == WeightFormat::fp8 ? 16 : 32;  // elements per 16 B
template <WeightFormat F> constexpr bool kScaled = F == WeightFormat::fp8 || F == WeightFormat::fp4;

template <WeightFormat F>
__host__ __device__ __forceinline__ int64_t bytes_of(int64_t n) {
  if constexpr (F == WeightFormat::f32) return n * 4;
  else if constexpr (F == WeightFormat::bf16) return n * 2;
  else if constexpr (F == WeightFormat::fp8) return n;
  else return n / 2;
}

struct Params {
  const uint8_t* data;
  const uint8_t* scale;
  const int32_t* expert_ids;
  int64_t expert_data_stride, expert_scale_stride;
  const float* x;
  int64_t x_stride;
  const int32_t* x_rows;
  float* y;
  int64_t y_stride;
  int64_t in, row_bytes, scale_cols;
  int block_out, block_in;
  int out_shift, chunk_shift;    // log2(block_out), log2(block_in / E) where powers of two, else -1
  int rows;                      // rows of the launch (expert mode: one per grid z)
  int group_out, tiles_per_group, tiles, tiles_per_cta;
  int kl, sc;                    // K slice per CTA (multiple of 128), CTAs per cluster
  bool quant, bf16_out;
};

// Quad q of chunk ch lives at quad q ^ swz(ch): for Q quads per chunk, the 8 lanes of a quarter-warp
// (chunks 8j..8j+7) then read 8 distinct groups of 4 banks.
template <int E>
__device__ __forceinline__ int swz(int ch) {
  constexpr int Q = E / 4;
  if constexpr (Q == 1) return 0;
  else return (ch / (8 / Q)) % Q;
}
template <int E>
__device__ __forceinline__ int swz_index(int i) {
  const int ch = i / E, q = (i % E) >> 2;
  return ch * E + ((q ^ swz<E>(ch)) << 2) + (i & 3);
}

using dev::ldg_stream;
using dev::warp_max_nonneg;
using dev::warp_sum;

// Two e4m3 codes (low 16 bits of `two`, low byte first) → f32, exactly (via f16).
__device__ __forceinline__ float2 e4m3x2_to_f32x2(uint32_t two) {
  uint32_t h;
  asm("{\n .reg .b16 lo;\n cvt.u16.u32 lo, %1;\n cvt.rn.f16x2.e4m3x2 %0, lo;\n}" : "=r"(h) : "r"(two));
  __half2 hh;
  memcpy(&hh, &h, 4);
  return __half22float2(hh);
}

// The 4 weights of quad q (elements 4q..4q+3 of the chunk), before the block scale (fp4: × 2⁻⁶).
template <WeightFormat F>
__device__ __forceinline__ void decode_quad(const uint4& c, int q, float (&v)[4]) {
  const uint32_t w[4] = {c.x, c.y, c.z, c.w};
  if constexpr (F == WeightFormat::f32) {
    v[0] = __uint_as_float(w[0]);
    v[1] = __uint_as_float(w[1]);
    v[2] = __uint_as_float(w[2]);
    v[3] = __uint_as_float(w[3]);
  } else if constexpr (F == WeightFormat::bf16) {
    const uint32_t a = w[2 * q], b = w[2 * q + 1];
    v[0] = __uint_as_float(a << 16);
    v[1] = __uint_as_float(a & 0xffff0000u);
    v[2] = __uint_as_float(b << 16);
    v[3] = __uint_as_float(b & 0xffff0000u);
  } else if constexpr (F == WeightFormat::fp8) {
    const uint32_t a = w[q];
    const float2 lo = e4m3x2_to_f32x2(a), hi = e4m3x2_to_f32x2(a >> 16);
    v[0] = lo.x;
    v[1] = lo.y;
    v[2] = hi.x;
    v[3] = hi.y;
  } else {
    // Word q/2 holds elements 8(q/2)..+7, byte b = elements 2b (low nibble) and 2b+1. e2m1 →
    // e4m3 byte: sign to bit 7, the three magnitude bits to bits 4..2 (value × 2⁻⁶, exact).
    const uint32_t a = w[q >> 1];
    const uint32_t even = ((a << 2) & 0x1c1c1c1cu) | ((a << 4) & 0x80808080u);
    const uint32_t odd = ((a >> 2) & 0x1c1c1c1cu) | (a & 0x80808080u);
    const int sh = (q & 1) * 16;
    const float2 e = e4m3x2_to_f32x2(even >> sh), o = e4m3x2_to_f32x2(odd >> sh);
    v[0] = e.x;
    v[1] = o.x;
    v[2] = e.y;
    v[3] = o.y;
  }
}

// (Measured 2026-12-02: an integer-shift decode of e4m3 / e2m1 — fewer conversion-pipe
// instructions, more ALU ones — was slower on every shape: the cvt path stays. FP8 linears with
// quantised activations take linear_small_mma, on the tensor cores, where it applies.)
// Stages R rows of the K slice [k0, k0 + len) into xs ([R][kl], swizzled); rows ≥ nr are zeros.
// FP8 1×128 quantise-dequantise when quant (spec §5.1, fp8_act_quant_dequant's formula; k0 is a
// multiple of 128, so the blocks are the input row's blocks): one warp per block.
template <int E, int R>
__device__ void stage_rows(const Params& p, int64_t row0, int nr, int64_t col0, int len, float* xs) {
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (!p.quant) {
    for (int r = 0; r < R; ++r) {
      float* dst = xs + r * p.kl;
      if (r < nr) {
        const int64_t xr = p.x_rows ? int64_t{p.x_rows[row0 + r]} : row0 + r;
        const float* src = p.x + xr * p.x_stride + col0;
        for (int i = tid; i < len; i += kThreads) dst[swz_index<E>(i)] = src[i];
      } else {
        for (int i = tid; i < len; i += kThreads) dst[i] = 0.0f;
      }
    }
    return;
  }
  const int nblk = (len + 127) / 128;
  // kT blocks per warp per pass with all their loads issued first (one L2 latency per pass, not
  // one per block).
  constexpr int kT = 2;
  for (int t0 = warp; t0 < R * nblk; t0 += kWarps * kT) {
    float vv[kT][4];
#pragma unroll
    for (int u = 0; u < kT; ++u) {
      const int t = t0 + u * kWarps;
      const int r = t / nblk, b = (t % nblk) * 128;
      const bool live = t < R * nblk && r < nr;
      const float* src = nullptr;
      if (live) src = p.x + (p.x_rows ? int64_t{p.x_rows[row0 + r]} : row0 + r) * p.x_stride + col0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int i = b + lane + 32 * j;
        vv[u][j] = live && i < len ? src[i] : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kT; ++u) {
    const int t = t0 + u * kWarps;
    if (t >= R * nblk) break;  // uniform over the warp
    const int r = t / nblk, b = (t % nblk) * 128;
    float* dst = xs + r * p.kl;
    if (r >= nr) {
      for (int j = 0; j < 4; ++j)
        if (b + lane + 32 * j < len) dst[b + lane + 32 * j] = 0.0f;
      continue;
    }
    float v[4], amax = 0.0f;
    for (int j = 0; j < 4; ++j) {
      v[j] = vv[u][j];
      const float a = fabsf(v[j]);
      amax = a > amax ? a : amax;
    }
    amax = warp_max_nonneg(amax);
    const float s = e8m0_to_f32(fp8_act_scale_e8m0(amax));
    for (int j = 0; j < 4; ++j) {
      const int i = b + lane + 32 * j;
      if (i >= len) continue;
      dst[swz_index<E>(i)] = e4m3_to_f32(dev::fp8_act_code(v[j], s)) * s;
    }
    }
  }
}

// grid (sc, CTA groups, z): blockIdx.x = rank in the cluster (K slice), blockIdx.y = tile run,
// blockIdx.z = row (expert mode) or 0.
template <WeightFormat F, int R, int C, int U>
__global__ void __launch_bounds__(kThreads, 2) linear_small_kernel(const __grid_constant__ Params p) {
  constexpr int E = kE<F>, Q = E / 4, TO = kWarps * C;
  constexpr bool kFold = kScaled<F> && R <= 2;  // see the chunk loop
  extern __shared__ __align__(16) float smem[];
  float* xs = smem;                  // [R][kl]
  float* red = smem + R * p.kl;      // [2][TO * R] split-K partials
  const int rank = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  const uint8_t* data = p.data;
  const uint8_t* scale = p.scale;
  int64_t row0 = 0;
  int nr = p.rows;
  if (p.expert_ids) {  // one row per z; the whole cluster sees the same id
    row0 = blockIdx.z;
    nr = 1;
    const int32_t e = p.expert_ids[row0];
    if (e < 0) return;  // skipped: y row untouched
    data += e * p.expert_data_stride;
    if constexpr (kScaled<F>) scale += e * p.expert_scale_stride;
  }
  const int64_t k0 = int64_t{rank} * p.kl;
  const int len = static_cast<int>(p.in - k0 < p.kl ? p.in - k0 : p.kl);
  const int nch = static_cast<int>(bytes_of<F>(len) / 16);
  const int k0_chunks = static_cast<int>(k0 / E);  // k0 is a multiple of 128
  const int sw = swz<E>(lane);

  const int t_begin = blockIdx.y * p.tiles_per_cta;
  const int t_end = t_begin + p.tiles_per_cta < p.tiles ? t_begin + p.tiles_per_cta : p.tiles;
  // The CTA's work as a flat run of steps (tile, round): a round is U chunks per weight row per
  // lane. The weights of step s + 1 are requested before step s is computed (and those of step 0
  // before the input rows are staged), so a warp's loads stay in flight across rounds and tiles
  // instead of one DRAM latency per round.
  const int rounds = nch > 0 ? (nch + 32 * U - 1) / (32 * U) : 1;
  const int nsteps = t_end > t_begin ? (t_end - t_begin) * rounds : 0;
  auto load_step = [&](int step, uint4 (&wv)[U][C], uint32_t (&sc8)[U][C]) {
    const int t = t_begin + step / rounds, i = step % rounds;
    const int g = t / p.tiles_per_group;
    const int64_t o_end = int64_t{g + 1} * p.group_out;
    const int64_t o0 = int64_t{g} * p.group_out + int64_t{t % p.tiles_per_group} * TO;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      int64_t o = o0 + warp * C + c;
      o = o < o_end ? o : o_end - 1;  // surplus rows read a valid row, never write
      const uint8_t* wrow = data + o * p.row_bytes + bytes_of<F>(k0);
      const uint8_t* srow = nullptr;
      // Integer divisions cost tens of instructions: shifts where the block sizes are powers of
      // two (the checkpoint's 128 and 32 always are).
      if constexpr (F == WeightFormat::fp8)
        srow = scale + (p.out_shift >= 0 ? o >> p.out_shift : o / p.block_out) * p.scale_cols;
      else if constexpr (F == WeightFormat::fp4) srow = scale + o * p.scale_cols;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int ch = lane + 32 * (U * i + u);
        wv[u][c] = ch < nch ? ldg_stream(wrow + int64_t{ch} * 16) : make_uint4(0, 0, 0, 0);
        if constexpr (kScaled<F>) {
          const int kc = k0_chunks + ch;  // chunk index along the whole row
          sc8[u][c] = ch < nch ? __ldg(srow + (p.chunk_shift >= 0 ? kc >> p.chunk_shift : kc / (p.block_in / E))) : 127u;
        } else {
          sc8[u][c] = 0u;
        }
      }
    }
  };

  uint4 wv[U][C];
  uint32_t sc8[U][C];
  if (nsteps > 0) load_step(0, wv, sc8);
  float acc[C][R];
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[c][r] = 0.0f;
  int staged_g = -1, buf = 0;
  for (int step = 0; step < nsteps; ++step) {
    const int t = t_begin + step / rounds, i = step % rounds;
    const int g = t / p.tiles_per_group;
    const int64_t o_end = int64_t{g + 1} * p.group_out;
    const int64_t o0 = int64_t{g} * p.group_out + int64_t{t % p.tiles_per_group} * TO;
    if (g != staged_g) {  // uniform over the CTA (a function of step only)
      __syncthreads();  // the previous group's rows are consumed
      stage_rows<E, R>(p, row0, nr, int64_t{g} * p.in + k0, len, xs);
      __syncthreads();
      staged_g = g;
    }
    uint4 wn[U][C];
    uint32_t sn[U][C];
    if (step + 1 < nsteps) load_step(step + 1, wn, sn);

#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ch = lane + 32 * (U * i + u);
      if (ch >= nch) break;  // only the last round of a warp's slice
      float s[C];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        if constexpr (F == WeightFormat::fp8) s[c] = e8m0_to_f32(static_cast<uint8_t>(sc8[u][c]));
        else if constexpr (F == WeightFormat::fp4) s[c] = e8m0_to_f32(static_cast<uint8_t>(sc8[u][c])) * 64.0f;
        else s[c] = 1.0f;
      }
      const float* xc = xs + ch * E;
      // kFold: the chunk's products summed before its block scale is applied (one multiply-add per
      // chunk instead of one multiply per weight; the scale is a power of two, so each product is
      // the same as with the scaled weight — only the f32 summation is grouped per chunk).
      float part[C][R];
#pragma unroll
      for (int c = 0; c < C; ++c)
#pragma unroll
        for (int r = 0; r < R; ++r) part[c][r] = 0.0f;
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        float wf[C][4];
#pragma unroll
        for (int c = 0; c < C; ++c) {
          decode_quad<F>(wv[u][c], q, wf[c]);
          if constexpr (kScaled<F> && !kFold) {
#pragma unroll
            for (int j = 0; j < 4; ++j) wf[c][j] *= s[c];  // = WeightView::at, exactly
          }
        }
        const int qo = (q ^ sw) * 4;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float4 xv = *reinterpret_cast<const float4*>(xc + r * p.kl + qo);
#pragma unroll
          for (int c = 0; c < C; ++c) {
            float& a = kFold ? part[c][r] : acc[c][r];
            a = fmaf(xv.x, wf[c][0], a);
            a = fmaf(xv.y, wf[c][1], a);
            a = fmaf(xv.z, wf[c][2], a);
            a = fmaf(xv.w, wf[c][3], a);
          }
        }
      }
      if constexpr (kFold) {
#pragma unroll
        for (int c = 0; c < C; ++c)
#pragma unroll
          for (int r = 0; r < R; ++r) acc[c][r] = fmaf(part[c][r], s[c], acc[c][r]);
      }
    }
    if (step + 1 < nsteps) {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int c = 0; c < C; ++c) {
          wv[u][c] = wn[u][c];
          sc8[u][c] = sn[u][c];
        }
    }
    if (i != rounds - 1) continue;  // the tile's sums are complete after its last round

    // Warp sums (xor butterfly: every lane holds the same bits), then lane (c·R + r) % 32 owns (c, r).
    if (p.sc == 1) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int64_t o = o0 + warp * C + c;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float v = warp_sum(acc[c][r]);
          if (lane == (c * R + r) % 32 && o < o_end && r < nr) p.y[(row0 + r) * p.y_stride + o] = p.bf16_out ? round_bf16(v) : v;
        }
      }
    } else {
      float* mine = red + buf * (TO * R);
#pragma unroll
      for (int c = 0; c < C; ++c)
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float v = warp_sum(acc[c][r]);
          if (lane == (c * R + r) % 32) mine[(warp * C + c) * R + r] = v;
        }
      cg::cluster_group cluster = cg::this_cluster();
      cluster.sync();  // every rank's partials of this tile are in place
      for (int idx = rank + p.sc * static_cast<int>(threadIdx.x); idx < TO * R; idx += p.sc * kThreads) {
        const int64_t o = o0 + idx / R;
        const int r = idx % R;
        if (o >= o_end || r >= nr) continue;
        float v = 0.0f;
        for (int k = 0; k < p.sc; ++k) v += cluster.map_shared_rank(mine, k)[idx];  // rank order
        p.y[(row0 + r) * p.y_stride + o] = p.bf16_out ? round_bf16(v) : v;
      }
      // Double-buffered exchange: the next tile writes the other buffer, and the one after it
      // writes this one only after every rank passed the next tile's cluster barrier.
      buf ^= 1;
    }
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int r = 0; r < R; ++r) acc[c][r] = 0.0f;
  }
  if (p.sc > 1) cg::this_cluster().sync();  // no CTA leaves while another reads its shared memory
}

int bucket(int n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : n <= 8 ? 8 : 16; }

// Weight rows per warp (wide tiles; narrow ones: 1) and 16-byte chunks per row in flight per lane,
// as many as the registers allow without spills (accumulators C·R, loads C·U·4).
constexpr int wide_c(int R) { return R >= 16 ? 2 : 4; }
// The loads are double-buffered (the next round's are in flight while one is computed), so twice
// these many registers hold weights.
constexpr int unroll_of(int R, int C) {
  return C == 1 ? (R <= 2 ? 8 : R <= 4 ? 2 : 1) : (R <= 1 ? 2 : 1);
}

template <WeightFormat F, int R, int C>
cudaError_t launch_rc(const Params& p, dim3 grid, size_t smem, cudaStream_t stream) {
  constexpr int U = unroll_of(R, C);
  auto kern = linear_small_kernel<F, R, C, U>;
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr =
      smem_opt_in([&] { return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemCap); });
  if (attr != cudaSuccess) return attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = grid.x;
  at[0].val.clusterDim.y = 1;
  at[0].val.clusterDim.z = 1;
  cfg.attrs = at;
  // No cluster attribute without split-K: a cluster launch, even of one CTA, is placed by the
  // cluster scheduler (the kernel touches the cluster only when p.sc > 1).
  cfg.numAttrs = grid.x > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kern, p);
}

template <WeightFormat F>
cudaError_t launch_r(const Params& p, int rb, bool wide, dim3 grid, size_t smem, cudaStream_t stream) {
  switch (rb) {
    case 1: return wide ? launch_rc<F, 1, wide_c(1)>(p, grid, smem, stream) : launch_rc<F, 1, 1>(p, grid, smem, stream);
    case 2: return wide ? launch_rc<F, 2, wide_c(2)>(p, grid, smem, stream) : launch_rc<F, 2, 1>(p, grid, smem, stream);
    case 4: return wide ? launch_rc<F, 4, wide_c(4)>(p, grid, smem, stream) : launch_rc<F, 4, 1>(p, grid, smem, stream);
    case 8: return wide ? launch_rc<F, 8, wide_c(8)>(p, grid, smem, stream) : launch_rc<F, 8, 1>(p, grid, smem, stream);
    default: return wide ? launch_rc<F, 16, wide_c(16)>(p, grid, smem, stream) : launch_rc<F, 16, 1>(p, grid, smem, stream);
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <WeightFormat F>
cudaError_t launch(const LinearArgs& a, int64_t groups, int64_t group_out, cudaStream_t stream) {
  constexpr int E = kE<F>;
  const WeightView& w = a.w;
  // What this path takes: whole 16-byte chunks per row, 16-byte aligned rows, chunks inside one
  // scale block.
  if (bytes_of<F>(w.in) % 16 != 0 || reinterpret_cast<uintptr_t>(w.data) % 16 != 0 ||
      a.expert_data_stride % 16 != 0)
    return cudaErrorNotSupported;
  if constexpr (kScaled<F>)
    if (w.block_in % E != 0) return cudaErrorNotSupported;
  if (group_out > INT_MAX / 2 || w.in > INT_MAX / 2) return cudaErrorNotSupported;

  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return cudaErrorNotSupported;
  const int64_t target = 2 * int64_t{sms};  // resident CTAs (two per SM)

  const bool experts = a.expert_ids != nullptr;
  const int nr = experts ? 1 : static_cast<int>(a.rows);
  const int64_t z = experts ? a.rows : 1;
  const int rb = bucket(nr);
  const int64_t kl_max = int64_t{kStageBytes} / 4 / rb / 128 * 128;
  const int64_t sc_min = cdiv(w.in, kl_max);
  if (sc_min > kMaxCluster) return cudaErrorNotSupported;

  // Rows per warp: wide_c where there are enough tiles to fill the GPU, else 1 (small outputs).
  const bool wide = groups * cdiv(group_out, kWarps * wide_c(rb)) * z * kMaxCluster >= target;
  const int TO = kWarps * (wide ? wide_c(rb) : 1);
  const int64_t tiles_per_group = cdiv(group_out, TO);
  const int64_t tiles = groups * tiles_per_group;
  if (tiles > INT_MAX / 2) return cudaErrorNotSupported;

  // K split: what the staging memory needs, more while the tiles alone leave SMs idle.
  int64_t sc = target / (tiles * z);  // rounded down: at most the resident CTAs
  sc = sc < 1 ? 1 : sc;
  sc = sc < sc_min ? sc_min : sc;
  sc = sc > kMaxCluster ? kMaxCluster : sc;
  const int64_t kblocks = cdiv(w.in, 128);
  sc = sc > kblocks ? kblocks : sc;
  const int64_t kl = cdiv(cdiv(w.in, sc), 128) * 128;
  sc = cdiv(w.in, kl);

  // Tiles per CTA: contiguous runs, as even as the resident CTA count allows.
  int64_t ctas_wanted = cdiv(target, sc * z);
  ctas_wanted = ctas_wanted < 1 ? 1 : ctas_wanted;
  const int64_t per = cdiv(tiles, ctas_wanted);
  const int64_t nct = cdiv(tiles, per);
  if (nct > 65535) return cudaErrorNotSupported;

  Params p{};
  p.data = w.data;
  p.scale = w.scale;
  p.expert_ids = a.expert_ids;
  p.expert_data_stride = a.expert_data_stride;
  p.expert_scale_stride = a.expert_scale_stride;
  p.x = a.x;
  p.x_stride = a.x_stride;
  p.x_rows = a.x_rows;
  p.y = a.y;
  p.y_stride = a.y_stride;
  p.in = w.in;
  p.row_bytes = bytes_of<F>(w.in);
  p.scale_cols = w.scale_cols;
  p.block_out = w.block_out;
  p.block_in = w.block_in;
  auto log2_or = [](int64_t v) {
    int k = 0;
    while (k < 31 && (int64_t{1} << k) < v) ++k;
    return v > 0 && (int64_t{1} << k) == v ? k : -1;
  };
  p.out_shift = log2_or(w.block_out);
  p.chunk_shift = kScaled<F> ? log2_or(w.block_in / E) : -1;
  p.rows = nr;
  p.group_out = static_cast<int>(group_out);
  p.tiles_per_group = static_cast<int>(tiles_per_group);
  p.tiles = static_cast<int>(tiles);
  p.tiles_per_cta = static_cast<int>(per);
  p.kl = static_cast<int>(kl);
  p.sc = static_cast<int>(sc);
  p.quant = a.quant_act;
  p.bf16_out = a.bf16_out;
  const size_t smem = (static_cast<size_t>(rb) * static_cast<size_t>(kl) + 2 * static_cast<size_t>(TO) * rb) * 4;
  const dim3 grid(static_cast<unsigned>(sc), static_cast<unsigned>(nct), static_cast<unsigned>(z));
  return launch_r<F>(p, rb, wide, grid, smem, stream);
}

}  // namespace

cudaError_t linear_small(const LinearArgs& a, cudaStream_t stream) {
  if (a.rows < 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (a.rows > kLinearSmallMaxRows) return cudaErrorNotSupported;
  const WeightView& w = a.w;
  // The argument checks of `linear` (so a direct call is as safe).
  if (!w.data || !a.x || !a.y || w.out <= 0 || w.in <= 0 || a.out_group < 0) return cudaErrorInvalidValue;
  if (a.expert_ids && (a.expert_data_stride < 0 || a.expert_scale_stride < 0)) return cudaErrorInvalidValue;
  int64_t groups = 1, group_out = w.out;
  if (a.out_group > 0) {
    if (w.out % a.out_group != 0) return cudaErrorInvalidValue;
    groups = w.out / a.out_group;
    group_out = a.out_group;
  }
  if (a.x_stride < groups * w.in || a.y_stride < w.out) return cudaErrorInvalidValue;
  if (!a.no_small_mma) {
    const cudaError_t e = linear_small_mma(a, stream);  // NotSupported: before any launch
    if (e != cudaErrorNotSupported) return e;
  }
  switch (w.format) {
    case WeightFormat::f32: return launch<WeightFormat::f32>(a, groups, group_out, stream);
    case WeightFormat::bf16: return launch<WeightFormat::bf16>(a, groups, group_out, stream);
    case WeightFormat::fp8:
      if (!w.scale || w.block_out <= 0 || w.block_in <= 0 || w.scale_cols < (w.in + w.block_in - 1) / w.block_in)
        return cudaErrorInvalidValue;
      return launch<WeightFormat::fp8>(a, groups, group_out, stream);
    case WeightFormat::fp4:
      if (!w.scale || w.block_in <= 0 || w.in % 2 != 0 || w.scale_cols < (w.in + w.block_in - 1) / w.block_in)
        return cudaErrorInvalidValue;
      return launch<WeightFormat::fp4>(a, groups, group_out, stream);
  }
  return cudaErrorNotSupported;
}

}  // namespace dsv4::cuda
