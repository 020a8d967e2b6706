// "Ring" FP4 routed-expert MoE kernels for decode (spec §3.6, §5.5), m <= 8 tokens, sm_90a.
// Same engine as the FP8 ring kernel (sm90_fp8_gemv_ring.cuh): kW = 8 or 16 warps per CTA, each streaming its
// pieces (2 KB of codes + 128 B of scales = one 16-row group of one tile) through its own
// bulk-copy ring of shared-memory slots with one mbarrier per slot; all reductions stay inside the
// CTA (fixed order, no workspace, no atomics).
//  - w13: flat units (expert chunk, 16-row group of w1 and w3); S warps per unit split K; the
//    epilogue applies the clamped SwiGLU and the routing weight and writes h as bf16
//    [m*top_k, h_stride] (no cross-row amax here: the w2 kernel quantises h per 128 itself).
//  - w2: a CTA unit is G2 row groups of the output x every selected expert; its pieces are split
//    evenly over the 8 warps, partials are combined per (row group, expert chunk) in warp order,
//    rounded to bf16 per slot and summed per token in ascending expert id.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_fp8_gemv_common.cuh"
#include "sm90_fp8_gemv_direct.cuh"

namespace dsv4::cuda::moe_ring_detail {
using gemv_detail::e8m0_fast;
using gemv_detail::Routing;

constexpr int kMaxW = 16;   // warps per CTA: 8 (two CTAs per SM) or 16 (more warps to hide latency)
constexpr int kSlot = kFp4PieceBytes;  // one piece: 2 KB codes + 128 B scales
constexpr int kMaxDepth = 8;
constexpr int kNcol = 8;     // expert slots per chunk = MMA columns
constexpr int kMaxM = 8;
constexpr float kFp4F16Scale = 16384.f;  // 2^14: FP4 codes placed in f16 are the value x 2^-14

struct MRParams {
  const uint8_t* w;        // tiled experts (fp4_relayout_w13 / fp4_relayout_w2), expert e at w + e*stride
  int64_t expert_stride;
  int num_experts;
  int n, k, nt, kt;        // rows / inputs of one matrix; 128-row tiles; k-tiles (w13: 128, w2: 256)
  const uint16_t* x;       // w13: x bf16 [m, k]; w2: h bf16 [m*top_k, x_stride]
  int64_t x_stride;
  int m, top_k;
  const int32_t* ids;
  const float* topw;
  uint16_t* out;           // w13: h bf16 [m*top_k, out_stride]; w2: y bf16 [m, n]
  int64_t out_stride;
  int grid, depth, ids_early, g2, jmax;
  uint32_t* trace;         // diagnostic (gemv_diag.hpp), normally null: per CTA {SM id, start, end}
};

// Placement trace (diagnostic): globaltimer (ns, low 32 bits) at CTA start and end, and the SM id.
__device__ __forceinline__ uint32_t trace_clock() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return static_cast<uint32_t>(t);
}
__device__ __forceinline__ void trace_cta(const MRParams& p, uint32_t t0) {
  if (p.trace == nullptr || threadIdx.x != 0) return;
  uint32_t smid;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  uint32_t* o = p.trace + 3 * blockIdx.x;
  o[0] = smid;
  o[1] = t0;
  o[2] = trace_clock();
}

struct MRLayout {
  int bars, routing, red, ybuf, xs, xs_stride, sxs, ring, total;
};
// rows: activation rows staged (w13: m tokens; w2: m*top_k slots); kq: 128-blocks per row.
__host__ __device__ inline MRLayout mr_layout(bool w2, int warps, int m, int top_k, int kt, int depth, int g2,
                                              int jmax) {
  MRLayout l{};
  const int rows = w2 ? m * top_k : m, kq = w2 ? 2 * kt : kt;
  l.bars = 0;
  l.routing = warps * kMaxDepth * 8;
  l.red = l.routing + (static_cast<int>(sizeof(Routing)) + 15) / 16 * 16;
  l.ybuf = l.red + (w2 ? warps * jmax * 4 * 32 * 4 : warps * 2 * 4 * 32 * 4);
  l.xs = l.ybuf + (w2 ? m * top_k * g2 * 16 * 4 : 0);
  // f16 rows (+32 B: four rows of a B-fragment load hit distinct banks) and one zero row (index
  // `rows`) that columns past a chunk's slots read.
  l.xs_stride = kq * 128 * 2 + 32;
  l.sxs = l.xs + (rows + 1) * l.xs_stride;
  l.ring = (l.sxs + rows * kq * 4 + 127) / 128 * 128;
  l.total = l.ring + warps * depth * kSlot;
  return l;
}

// Quantises `rows` bf16 rows (x_stride elements apart) per 1x128 block (spec §5.1) and stages the
// e4m3 values as f16 (exact): xs row r at r * xs_stride bytes, KQ blocks (zeros past k), scales
// sxs[r * KQ + b] * smul; then zeroes row `rows`. Rows with row_expert[r] < 0 (when given) are
// staged as zeros without reading x (their h was never written). Needs all kThreads threads; no
// barrier inside.
template <int kThreads>
__device__ __forceinline__ void stage_act_f16(const uint16_t* x, int rows, int k, int KQ, uint8_t* xs,
                                              int xs_stride, float* sxs, int64_t x_stride, float smul,
                                              const int* row_expert = nullptr) {
  const int tid = threadIdx.x, sub = tid & 7, nblk = rows * KQ;
  for (int q0 = 0; q0 < nblk; q0 += kThreads / 8) {
    const int q = q0 + (tid >> 3);
    const bool act = q < nblk;
    const int r = act ? q / KQ : 0, b = act ? q % KQ : 0, kk = b * 128 + sub * 16;
    const bool load = act && (!row_expert || row_expert[r] >= 0);
    uint4 u[2] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
#pragma unroll
    for (int half = 0; half < 2; ++half)
      if (load && kk + half * 8 < k) u[half] = __ldg(reinterpret_cast<const uint4*>(x + r * x_stride + kk + half * 8));
    float v[16];
    float amax = 0.f;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t wd[4] = {u[half].x, u[half].y, u[half].z, u[half].w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t h = (i & 1) ? (wd[i / 2] >> 16) : (wd[i / 2] & 0xffffu);
        v[half * 8 + i] = __uint_as_float(h << 16);
        amax = fmaxf(amax, fabsf(v[half * 8 + i]));
      }
    }
    amax = gemv_detail::block_amax8(amax);
    uint4 e8;
    const uint32_t e = gemv_detail::quantize16_e4m3(v, amax, e8);
    if (act) {
      const uint32_t w8[4] = {e8.x, e8.y, e8.z, e8.w};
      uint32_t f[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        uint32_t r32;
        const uint16_t pair = static_cast<uint16_t>(w8[i / 2] >> (16 * (i & 1)));
        asm("{\n .reg .b16 t;\n mov.b16 t, %1;\n cvt.rn.f16x2.e4m3x2 %0, t;\n}" : "=r"(r32) : "h"(pair));
        f[i] = r32;
      }
      uint4* dst = reinterpret_cast<uint4*>(xs + r * xs_stride + kk * 2);
      dst[0] = make_uint4(f[0], f[1], f[2], f[3]);
      dst[1] = make_uint4(f[4], f[5], f[6], f[7]);
      if (sub == 0) sxs[r * KQ + b] = e8m0_to_f32(static_cast<uint8_t>(e)) * smul;
    }
  }
  for (int i = tid; i < xs_stride / 16; i += kThreads)
    reinterpret_cast<uint4*>(xs + rows * xs_stride)[i] = make_uint4(0, 0, 0, 0);
}

// One lane's operands of a w1|w3 piece in shared memory: code words a[mat][ks/2] (layout in
// gemv_layout.hpp) and the per-32 scale words of rows g and g+8, sc[mat][0|1] (byte ks each).
__device__ __forceinline__ void load_w13_piece(const uint8_t* piece, int lane, int g, uint4 (&a)[2][2],
                                               uint32_t (&sc)[2][2]) {
#pragma unroll
  for (int mat = 0; mat < 2; ++mat) {
#pragma unroll
    for (int kp = 0; kp < 2; ++kp)
      a[mat][kp] = *reinterpret_cast<const uint4*>(piece + mat * 1024 + kp * 512 + lane * 16);
#pragma unroll
    for (int hi = 0; hi < 2; ++hi)
      sc[mat][hi] = *reinterpret_cast<const uint32_t*>(piece + 2048 + mat * 64 + (g + 8 * hi) * 4);
  }
}

// Routing tables (gemv_detail::build_routing, all threads, contains barriers).
__device__ __forceinline__ void route(const MRParams& p, Routing* rt) {
  gemv_detail::Params q{};
  q.ids = p.ids;
  q.topw = p.topw;
  q.m = p.m;
  q.top_k = p.top_k;
  q.num_experts = p.num_experts;
  gemv_detail::build_routing<kNcol>(q, rt);
}

// Hopper has no mma.sync for e4m3 (the compiler emulates it with e4m3->f16 conversions and two
// f16 MMAs), so these kernels run native f16 MMAs: FP4 codes become f16 by bit placement (exact,
// value x 2^-14) and the quantised activations are staged as f16 (exact for every e4m3 value).
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9},"
      " {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Per byte of w: the f16 high byte of its low (lo) or high (hi) nibble's e2m1 code: sign to bit 7,
// exponent|mantissa to bits 3..1 (the f16 low byte is zero). f16 = e2m1 value x 2^-14, exactly.
__device__ __forceinline__ uint32_t fp4_lo_f16hi(uint32_t w) {
  return ((w << 4) & 0x80808080u) | ((w << 1) & 0x0e0e0e0eu);
}
__device__ __forceinline__ uint32_t fp4_hi_f16hi(uint32_t w) {
  return (w & 0x80808080u) | ((w >> 3) & 0x0e0e0e0eu);
}
// f16x2 of bytes (i, i+1) of t (each in the high byte of its half).
__device__ __forceinline__ uint32_t f16x2_of(uint32_t t, int i) {
  return __byte_perm(t, 0u, i == 0 ? 0x1404u : 0x3424u);
}
// One 16-row x 32-input step of one scale group: the code words of rows g (wg) and g+8 (wg8) hold
// inputs k0 + 4tq + i in their low nibbles and k0 + 16 + 4tq + i in their high nibbles (byte i);
// the two m16n8k16 MMAs take the low and the high nibbles with the MMA's k index j mapped to
// 4tq + (j & 1) + 2*(j >= 8): b (f16, 4 per lane) holds x[k0 + 4tq .. +3] and x[k0 + 16 + 4tq .. +3].
// kVar != 0: timing-only variants of the w2 kernel (bench_gemv's stage breakdown, garbage results):
// 1 = no FP4 decode (raw code words fed to the MMAs), 2 = no MMA (decode kept alive by xor),
// 3 = neither (only the piece stream and the scale math).
template <int kVar = 0>
__device__ __forceinline__ void fp4_step(uint32_t wg, uint32_t wg8, uint32_t scg, uint32_t scg8, int k4,
                                         uint2 blo, uint2 bhi, float (&tt)[4]) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  if constexpr (kVar == 1) {
    mma_f16(c, wg, wg8, wg ^ 1u, wg8 ^ 1u, blo.x, blo.y);
    mma_f16(c, wg ^ 2u, wg8 ^ 2u, wg ^ 3u, wg8 ^ 3u, bhi.x, bhi.y);
  } else if constexpr (kVar == 2) {
    const uint32_t lg = fp4_lo_f16hi(wg), lg8 = fp4_lo_f16hi(wg8), hg = fp4_hi_f16hi(wg), hg8 = fp4_hi_f16hi(wg8);
    const uint32_t v = f16x2_of(lg, 0) ^ f16x2_of(lg8, 0) ^ f16x2_of(lg, 2) ^ f16x2_of(lg8, 2) ^ f16x2_of(hg, 0) ^
                       f16x2_of(hg8, 0) ^ f16x2_of(hg, 2) ^ f16x2_of(hg8, 2) ^ blo.x ^ blo.y ^ bhi.x ^ bhi.y;
    c[0] = __uint_as_float(v & 0x3fffffffu);
  } else if constexpr (kVar == 3) {
    c[0] = __uint_as_float((wg ^ wg8 ^ blo.x ^ bhi.y) & 0x3fffffffu);
  }
  if constexpr (kVar == 0) {
  const uint32_t lg = fp4_lo_f16hi(wg), lg8 = fp4_lo_f16hi(wg8);
  mma_f16(c, f16x2_of(lg, 0), f16x2_of(lg8, 0), f16x2_of(lg, 2), f16x2_of(lg8, 2), blo.x, blo.y);
  const uint32_t hg = fp4_hi_f16hi(wg), hg8 = fp4_hi_f16hi(wg8);
  mma_f16(c, f16x2_of(hg, 0), f16x2_of(hg8, 0), f16x2_of(hg, 2), f16x2_of(hg8, 2), bhi.x, bhi.y);
  }
  const float swg = e8m0_fast((scg >> (8 * k4)) & 0xffu), swg8 = e8m0_fast((scg8 >> (8 * k4)) & 0xffu);
  tt[0] = fmaf(c[0], swg, tt[0]);
  tt[1] = fmaf(c[1], swg, tt[1]);
  tt[2] = fmaf(c[2], swg8, tt[2]);
  tt[3] = fmaf(c[3], swg8, tt[3]);
}

// ---- stage 1: w1|w3 + SwiGLU ------------------------------------------------------------------
template <int kW>
__global__ void __launch_bounds__(kW * 32, 16 / kW) moe_w13_ring_kernel(const __grid_constant__ MRParams p) {
  const uint32_t trace_t0 = p.trace ? trace_clock() : 0u;
  constexpr int kT = kW * 32;
  extern __shared__ __align__(128) uint8_t smem[];
  const MRLayout L = mr_layout(false, kW, p.m, p.top_k, p.kt, p.depth, p.g2, p.jmax);
  Routing* rt = reinterpret_cast<Routing*>(smem + L.routing);
  float* red = reinterpret_cast<float*>(smem + L.red);
  uint8_t* xs = smem + L.xs;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int KT = p.kt, D = p.depth, grid = p.grid;
  gemv_detail::WarpRing ring(reinterpret_cast<uint64_t*>(smem + L.bars) + warp * kMaxDepth,
                             smem + L.ring + warp * D * kSlot, kSlot, D);

  gemv_detail::pdl_wait();  // ids and x may come from the previous kernel
  gemv_detail::pdl_trigger();
  route(p, rt);
  const int nrg = p.nt * 8, U = rt->nchunks * nrg;
  // Split: S warps per unit minimising the longest chain (rounds x k-tiles per warp).
  int lg = 0;
  {
    int64_t best = -1;
    for (int l = 0; (kW >> l) >= 1 && (1 << l) <= KT; ++l) {
      const int64_t cu = (U + (kW >> l) - 1) / (kW >> l);
      const int64_t cost = (cu + grid - 1) / grid * ((KT + (1 << l) - 1) >> l);
      if (best < 0 || cost < best) {
        best = cost;
        lg = l;
      }
    }
  }
  const int S = 1 << lg, G = kW >> lg, CU = (U + G - 1) / G;
  const int lrg = warp >> lg, s = warp & (S - 1);
  const int kb = s * KT / S, ke = (s + 1) * KT / S, nk = ke - kb;
  const int bx = static_cast<int>(blockIdx.x);
  const int nu = CU > bx ? (CU - bx + grid - 1) / grid : 0;
  int nu_w = 0;
  while (nu_w < nu && (bx + nu_w * grid) * G + lrg < U) ++nu_w;
  const int total = nu_w * nk;

  int ij = 0, ic = 0, issued = 0;
  auto issue_next = [&]() {
    const int f = (bx + ij * grid) * G + lrg, c = f / nrg, rg = f - c * nrg;
    ring.issue(p.w + rt->chunk_expert[c] * p.expert_stride + (static_cast<int64_t>(rg) * KT + kb + ic) * kFp4PieceBytes);
    if (++ic == nk) {
      ic = 0;
      ++ij;
    }
    ++issued;
  };
  if (lane == 0) {
    ring.init();
    while (issued < min(D, total)) issue_next();
  }
  __syncwarp();
  // x per 1x128 block as f16. The FP4 codes decode to value x 2^-14: the sums are scaled by 2^14
  // once, in the epilogue (on the x scales it could overflow f32 for absurdly large activations).
  stage_act_f16<kT>(p.x, p.m, p.k, KT, xs, L.xs_stride, sxs, p.x_stride, 1.f);
  __syncthreads();

  for (int j = 0; j < nu; ++j) {
    const bool valid = j < nu_w;
    const int f = (bx + j * grid) * G + lrg;
    const int c = valid ? f / nrg : 0, rg = valid ? f - c * nrg : 0;
    const int cfirst = rt->chunk_first[c], ccount = valid ? rt->chunk_count[c] : 1;
    const int bpair = rt->sorted[cfirst + min(g, ccount - 1)];
    const uint8_t* xrow = xs + (g < ccount ? bpair / p.top_k : p.m) * L.xs_stride + tq * 8;
    int ctok[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) ctok[e] = rt->sorted[cfirst + min(2 * tq + e, ccount - 1)] / p.top_k;
    float acc[2][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[a][r] = 0.f;
    if (valid) {
      for (int kk = kb; kk < ke; ++kk) {
        const uint8_t* piece = ring.wait();
        uint4 a[2][2];
        uint32_t sc[2][2];
        load_w13_piece(piece, lane, g, a, sc);
        __syncwarp();  // every lane has its operands: the slot may be refilled
        if (lane == 0 && issued < total) issue_next();
        ring.next();
        uint2 b[4][2];
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
          b[ks][0] = *reinterpret_cast<const uint2*>(xrow + (kk * 128 + ks * 32) * 2);
          b[ks][1] = *reinterpret_cast<const uint2*>(xrow + (kk * 128 + ks * 32 + 16) * 2);
        }
        const float s0 = sxs[ctok[0] * KT + kk], s1 = sxs[ctok[1] * KT + kk];
#pragma unroll
        for (int mat = 0; mat < 2; ++mat) {
          float tt[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) {
            const uint4& w4 = a[mat][ks / 2];
            fp4_step((ks & 1) ? w4.z : w4.x, (ks & 1) ? w4.w : w4.y, sc[mat][0], sc[mat][1], ks, b[ks][0], b[ks][1], tt);
          }
          acc[mat][0] = fmaf(tt[0], s0, acc[mat][0]);
          acc[mat][1] = fmaf(tt[1], s1, acc[mat][1]);
          acc[mat][2] = fmaf(tt[2], s0, acc[mat][2]);
          acc[mat][3] = fmaf(tt[3], s1, acc[mat][3]);
        }
      }
    }
    if (S > 1) {  // the S partials of a unit, summed in warp order
      float* mine = red + warp * (8 * 32) + lane;  // 2 mats x 4 accumulators per lane
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int r = 0; r < 4; ++r) mine[(a * 4 + r) * 32] = acc[a][r];
      __syncthreads();
      if (s == 0 && valid) {
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            float sum = mine[(a * 4 + r) * 32];
            for (int w2 = 1; w2 < S; ++w2) sum += mine[(w2 * 8 + a * 4 + r) * 32];
            acc[a][r] = sum;
          }
      }
    }
    if (s == 0 && valid) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int col = 2 * tq + (r & 1), row = rg * 16 + g + 8 * (r >> 1);
        if (col >= ccount || row >= p.n) continue;
        const int pair = rt->sorted[cfirst + col];
        p.out[static_cast<int64_t>(pair) * p.out_stride + row] = f32_to_bf16(
            gemv_detail::swiglu_weighted(acc[0][r] * kFp4F16Scale, acc[1][r] * kFp4F16Scale, rt->weight[pair]));
      }
    }
    if (S > 1) __syncthreads();  // red is reused by the next unit
  }
  trace_cta(p, trace_t0);
}

// ---- stage 2: w2 + expert sum -----------------------------------------------------------------
template <int kW, int kVar = 0>
__global__ void __launch_bounds__(kW * 32, 16 / kW) moe_w2_ring_kernel(const __grid_constant__ MRParams p) {
  const uint32_t trace_t0 = p.trace ? trace_clock() : 0u;
  constexpr int kT = kW * 32;
  extern __shared__ __align__(128) uint8_t smem[];
  const MRLayout L = mr_layout(true, kW, p.m, p.top_k, p.kt, p.depth, p.g2, p.jmax);
  Routing* rt = reinterpret_cast<Routing*>(smem + L.routing);
  float* red = reinterpret_cast<float*>(smem + L.red);
  float* ybuf = reinterpret_cast<float*>(smem + L.ybuf);
  uint8_t* xs = smem + L.xs;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int KT = p.kt, KQ = 2 * KT, D = p.depth, grid = p.grid, G2 = p.g2, P = p.m * p.top_k;
  gemv_detail::WarpRing ring(reinterpret_cast<uint64_t*>(smem + L.bars) + warp * kMaxDepth,
                             smem + L.ring + warp * D * kSlot, kSlot, D);

  // ids_early: the caller guarantees no kernel still running may write ids (e.g. the w1|w3 launch
  // sits between the router and this one), so routing and the first weights precede pdl_wait().
  if (!p.ids_early) {
    gemv_detail::pdl_wait();
    gemv_detail::pdl_trigger();
  }
  route(p, rt);
  const int nch = rt->nchunks, nrg = p.nt * 8, CU = nrg / G2;
  const int bx = static_cast<int>(blockIdx.x);
  const int nu = CU > bx ? (CU - bx + grid - 1) / grid : 0;
  // Pieces of a CTA unit: (row group rl < G2, chunk c, k-tile) in that order; warp w takes
  // [w*Lp/8, (w+1)*Lp/8). A segment = one (rl, c) = KT pieces.
  const int Lp = G2 * nch * KT;
  const int q0 = warp * Lp / kW, q1 = (warp + 1) * Lp / kW, per_unit = q1 - q0;
  const int total = nu * per_unit;

  int ij = 0, iq = q0, issued = 0;
  auto issue_next = [&]() {
    const int seg = iq / KT, kt = iq - seg * KT, rl = seg / nch, c = seg - rl * nch;
    const int rg = (bx + ij * grid) * G2 + rl;
    ring.issue(p.w + rt->chunk_expert[c] * p.expert_stride + (static_cast<int64_t>(rg) * KT + kt) * kFp4PieceBytes);
    if (++iq == q1) {
      iq = q0;
      ++ij;
    }
    ++issued;
  };
  if (lane == 0) {
    ring.init();
    while (issued < min(D, total)) issue_next();
  }
  __syncwarp();
  if (p.ids_early) {
    gemv_detail::pdl_wait();  // h comes from the previous kernel
    gemv_detail::pdl_trigger();
  }
  // h of every slot, per 1x128 block (§5.1), zero past `inter`; 2^6 of the FP4 decode on the scale.
  stage_act_f16<kT>(p.x, P, p.k, KQ, xs, L.xs_stride, sxs, p.x_stride, 1.f, rt->expert);  // 2^14: see w13
  __syncthreads();

  const int ROWS = G2 * 16;
  for (int j = 0; j < nu; ++j) {
    const int cu = bx + j * grid;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    int cur = -1, jslot = 0;
    const uint8_t* xrow = xs;
    int cpair[2] = {0, 0};
    for (int q = q0; q < q1; ++q) {
      const int seg = q / KT, kt = q - seg * KT;
      if (seg != cur) {
        if (cur >= 0) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            red[((warp * p.jmax + jslot) * 4 + r) * 32 + lane] = acc[r];
            acc[r] = 0.f;
          }
          ++jslot;
        }
        cur = seg;
        const int c = seg % nch;
        const int cfirst = rt->chunk_first[c], ccount = rt->chunk_count[c];
        xrow = xs + (g < ccount ? rt->sorted[cfirst + g] : P) * L.xs_stride + tq * 8;
#pragma unroll
        for (int e = 0; e < 2; ++e) cpair[e] = rt->sorted[cfirst + min(2 * tq + e, ccount - 1)];
      }
      const uint8_t* piece = ring.wait();
      uint4 a[4];
#pragma unroll
      for (int kp = 0; kp < 4; ++kp) a[kp] = *reinterpret_cast<const uint4*>(piece + kp * 512 + lane * 16);
      uint2 sc[2];
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) sc[hi] = *reinterpret_cast<const uint2*>(piece + 2048 + (g + 8 * hi) * 8);
      __syncwarp();  // every lane has its operands: the slot may be refilled
      if (lane == 0 && issued < total) issue_next();
      ring.next();
#pragma unroll
      for (int kb2 = 0; kb2 < 2; ++kb2) {
        float tt[4] = {0.f, 0.f, 0.f, 0.f};
        const uint32_t scg = kb2 ? sc[0].y : sc[0].x, scg8 = kb2 ? sc[1].y : sc[1].x;
#pragma unroll
        for (int k4 = 0; k4 < 4; ++k4) {
          const int ks = kb2 * 4 + k4;
          const uint8_t* src = xrow + (kt * 256 + ks * 32) * 2;
          const uint4& w4 = a[ks / 2];
          fp4_step<kVar>((ks & 1) ? w4.z : w4.x, (ks & 1) ? w4.w : w4.y, scg, scg8, k4,
                         *reinterpret_cast<const uint2*>(src), *reinterpret_cast<const uint2*>(src + 32), tt);
        }
        const float s0 = sxs[cpair[0] * KQ + kt * 2 + kb2], s1 = sxs[cpair[1] * KQ + kt * 2 + kb2];
        acc[0] = fmaf(tt[0], s0, acc[0]);
        acc[1] = fmaf(tt[1], s1, acc[1]);
        acc[2] = fmaf(tt[2], s0, acc[2]);
        acc[3] = fmaf(tt[3], s1, acc[3]);
      }
    }
    if (cur >= 0) {
#pragma unroll
      for (int r = 0; r < 4; ++r) red[((warp * p.jmax + jslot) * 4 + r) * 32 + lane] = acc[r];
    }
    __syncthreads();
    // Combine each segment's partials in warp order, round per slot to bf16 (ybuf[pair][row]).
    for (int seg = warp; seg < G2 * nch; seg += kW) {
      float v[4] = {0.f, 0.f, 0.f, 0.f};
      for (int w = 0; w < kW; ++w) {
        const int a0 = w * Lp / kW, a1 = (w + 1) * Lp / kW;
        if (a0 >= a1 || a1 <= seg * KT || a0 >= (seg + 1) * KT) continue;  // empty or disjoint
        const int js = seg - a0 / KT;
#pragma unroll
        for (int r = 0; r < 4; ++r) v[r] += red[((w * p.jmax + js) * 4 + r) * 32 + lane];
      }
      const int rl = seg / nch, c = seg - rl * nch;
      const int cfirst = rt->chunk_first[c], ccount = rt->chunk_count[c];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int col = 2 * tq + (r & 1);
        if (col < ccount)
          ybuf[rt->sorted[cfirst + col] * ROWS + rl * 16 + g + 8 * (r >> 1)] = round_bf16(v[r] * kFp4F16Scale);
      }
    }
    __syncthreads();
    // y[t] = bf16(sum of the token's valid slots in ascending expert id).
    for (int idx = tid; idx < p.m * ROWS; idx += kT) {
      const int t = idx / ROWS, rl = idx - t * ROWS, row = cu * ROWS + rl;
      if (row >= p.n) continue;
      float sum = 0.f;
      for (int i = 0; i < rt->tok_count[t]; ++i) sum += ybuf[rt->tok_order[t][i] * ROWS + rl];
      p.out[static_cast<int64_t>(t) * p.n + row] = f32_to_bf16(sum);
    }
    __syncthreads();  // red and ybuf are reused by the next unit
  }
  trace_cta(p, trace_t0);
}

}  // namespace dsv4::cuda::moe_ring_detail
