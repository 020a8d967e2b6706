// "Direct" FP8 block-scaled decode GEMV (spec §5.4), M = 1..16, sm_90a: no shared-memory ring and no
// producer warp. Each warp streams its A fragments straight from global memory into registers with
// 16-byte ld.global.nc.L1::no_allocate loads, double-buffered in registers (the next kBatch k-tiles,
// 4 x 16 B per lane each, are loaded while this batch's MMAs run; the first before the activations
// are quantised), and runs mma.sync m16n8k32 e4m3 with 16 weight rows on the M side and 8 tokens on N.
// Same weight layout as the streaming kernel (fp8_relayout): a warp's (16-row group, 128-input tile)
// fragment is 2 KB contiguous at tile (nt, kt) + rg*2048, lane*16 + ks*512.
// Activations: quantised per 1x128 (spec §5.1) once per CTA into shared memory, all of K.
// Work split: a CTA of 16 warps owns G = 16/S row groups (16 rows each) per unit; S warps share one
// row group, each a contiguous K slice, and are summed through shared memory in warp order
// (deterministic, no atomics, no cross-CTA traffic). CTAs grid-stride over units.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_fp8_gemv_common.cuh"

namespace dsv4::cuda::direct_detail {
using gemv_detail::cvt_e4m3x2;
using gemv_detail::mma_e4m3;

constexpr int kDWarps = 16;
constexpr int kDThreads = kDWarps * 32;
// k-tiles per load batch, double-buffered: 8-16 16-byte loads in flight per lane. Measured: 3 was
// 1-2 us slower at M = 1 (and spills at M > 8); 4 without double buffering equal at M = 1.
template <int NH> constexpr int kBatchOf = 2;
constexpr int kQPass = 4;  // quantisation passes whose x loads are issued together

struct DParams {
  const uint8_t* w;        // fp8_relayout tiles
  const uint8_t* w_scale;  // e8m0 [nt, kt]
  const uint16_t* x;       // bf16 [m, k]
  uint16_t* y;             // bf16 [m, n]
  int n, k, m, kt, nrg;    // nrg = 16-row groups = nt * 8
  int split, lg_split, groups, units;
};

struct DLayout {
  int xs_stride, sxs, red, total;
};
// xs: e4m3 [m][kt*128 + 16] (+16 B: the 8 token rows of a B fragment hit distinct banks),
// sxs: f32 [m][kt] activation scales, red: f32 [warps][NH*4][32] split-K partials.
__host__ __device__ inline DLayout d_layout(int m, int kt, int nh, int warps) {
  DLayout l{};
  l.xs_stride = kt * 128 + 16;
  l.sxs = (m * l.xs_stride + 15) / 16 * 16;
  l.red = l.sxs + (m * kt * 4 + 15) / 16 * 16;
  l.total = l.red + warps * nh * 4 * 32 * 4;
  return l;
}

__device__ __forceinline__ uint4 ldg_stream(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Quantises x [m, k] (bf16 rows of x_stride elements) per 1x128 block (spec §5.1) into shared
// memory: e4m3 rows of `xs_stride` bytes and f32 scales sxs[r * KT + b] * smul, for KT blocks per
// row (blocks past k hold zeros). 8 threads x 16 values per block; the x loads of kQPass passes
// are issued before any is used. Needs all kThreads threads; no barrier inside.
template <int kThreads>
__device__ __forceinline__ void stage_act_e4m3(const uint16_t* x, int m, int k, int KT, uint8_t* xs,
                                               int xs_stride, float* sxs, int64_t x_stride,
                                               float smul = 1.f) {
  const int tid = threadIdx.x;
  const int nblk = m * KT;
  const int sub = tid & 7;
  for (int qp = 0; qp < nblk; qp += kQPass * (kThreads / 8)) {
    uint4 u[kQPass][2];
#pragma unroll
    for (int ps = 0; ps < kQPass; ++ps) {
      const int q = qp + ps * (kThreads / 8) + (tid >> 3);
      const int r = q / KT, kk = (q % KT) * 128 + sub * 16;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        u[ps][half] = make_uint4(0, 0, 0, 0);
        if (q < nblk && kk + half * 8 < k)
          u[ps][half] = __ldg(reinterpret_cast<const uint4*>(x + r * x_stride + kk + half * 8));
      }
    }
#pragma unroll
    for (int ps = 0; ps < kQPass; ++ps) {
      const int q = qp + ps * (kThreads / 8) + (tid >> 3);
      const bool act = q < nblk;
      const int r = act ? q / KT : 0, b = act ? q % KT : 0;
      const int kk = b * 128 + sub * 16;
      float v[16];
      float amax = 0.f;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t wd[4] = {u[ps][half].x, u[ps][half].y, u[ps][half].z, u[ps][half].w};
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const uint32_t h = (i & 1) ? (wd[i / 2] >> 16) : (wd[i / 2] & 0xffffu);
          v[half * 8 + i] = __uint_as_float(h << 16);
          amax = fmaxf(amax, fabsf(v[half * 8 + i]));
        }
      }
      amax = gemv_detail::block_amax8(amax);
      if (act) {
        const uint32_t e = gemv_detail::quantize16_e4m3(v, amax, *reinterpret_cast<uint4*>(xs + r * xs_stride + kk));
        if (sub == 0) sxs[r * KT + b] = e8m0_to_f32(static_cast<uint8_t>(e)) * smul;
      }
    }
  }
}

// B-fragment sources of one lane: token t = 8h + g (rows >= m read row m-1 and are zeroed), scales
// of the accumulator columns 8h + 2tq + e (columns >= m read a valid scale; their MMA sums are 0).
template <int NH>
struct BSources {
  const uint8_t* xrow[NH];
  bool xv[NH];
  const float* sxc[NH][2];
};
template <int NH>
__device__ __forceinline__ BSources<NH> b_sources(const uint8_t* xs, int xs_stride, const float* sxs, int m,
                                                  int KT, int g, int tq) {
  BSources<NH> b;
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    const int t = 8 * h + g;
    b.xv[h] = t < m;
    b.xrow[h] = xs + min(t, m - 1) * xs_stride + tq * 4;
#pragma unroll
    for (int e = 0; e < 2; ++e) b.sxc[h][e] = sxs + min(8 * h + 2 * tq + e, m - 1) * KT;
  }
  return b;
}
// One 16-row x 128-input tile: 4 MMAs into fresh f32 accumulators, then acc += c * s_w * s_x (§5.4).
template <int NH>
__device__ __forceinline__ void fp8_tile_mma(const uint4 (&a)[4], const BSources<NH>& b, int kk, float sw,
                                             float (&acc)[NH][4]) {
  float c[NH][4];
#pragma unroll
  for (int h = 0; h < NH; ++h)
#pragma unroll
    for (int r = 0; r < 4; ++r) c[h][r] = 0.f;
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
#pragma unroll
    for (int h = 0; h < NH; ++h) {
      const uint8_t* src = b.xrow[h] + kk * 128 + ks * 32;
      uint32_t b0 = *reinterpret_cast<const uint32_t*>(src);
      uint32_t b1 = *reinterpret_cast<const uint32_t*>(src + 16);
      if (!b.xv[h]) b0 = b1 = 0u;
      mma_e4m3(c[h], a[ks].x, a[ks].y, a[ks].z, a[ks].w, b0, b1);
    }
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    const float s0 = sw * b.sxc[h][0][kk], s1 = sw * b.sxc[h][1][kk];
    acc[h][0] += c[h][0] * s0;
    acc[h][1] += c[h][1] * s1;
    acc[h][2] += c[h][2] * s0;
    acc[h][3] += c[h][3] * s1;
  }
}
// End of a unit: the `split` partials of a row group (warps warp & ~(split-1) ...) summed through
// shared memory `red` in warp order (deterministic), then warp s == 0 writes bf16 y for row group
// R (valid). All threads of the CTA must call it (barriers inside when split > 1).
template <int NH>
__device__ __forceinline__ void split_reduce_store(float* red, int warp, int lane, int split, int s, bool valid,
                                                   float (&acc)[NH][4], int R, uint16_t* y, int n, int m) {
  const int g = lane >> 2, tq = lane & 3;
  if (split > 1) {
    float* mine = red + warp * (NH * 4 * 32) + lane;
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 4; ++r) mine[(h * 4 + r) * 32] = acc[h][r];
    __syncthreads();
    if (s == 0 && valid) {
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          float sum = mine[(h * 4 + r) * 32];
          for (int w2 = 1; w2 < split; ++w2) sum += mine[(w2 * NH * 4 + h * 4 + r) * 32];
          acc[h][r] = sum;
        }
    }
  }
  if (s == 0 && valid) {
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = R * 16 + g + 8 * (r >> 1), col = 8 * h + 2 * tq + (r & 1);
        if (col < m && row < n) y[static_cast<int64_t>(col) * n + row] = f32_to_bf16(acc[h][r]);
      }
  }
  if (split > 1) __syncthreads();  // red is reused by the next unit
}

template <int NH>
__global__ void __launch_bounds__(kDThreads, 1) fp8_direct_kernel(const __grid_constant__ DParams p) {
  constexpr int kBatch = kBatchOf<NH>;
  extern __shared__ __align__(16) uint8_t smem[];
  const DLayout L = d_layout(p.m, p.kt, NH, kDWarps);
  uint8_t* xs = smem;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  float* red = reinterpret_cast<float*>(smem + L.red);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int KT = p.kt;
  const int lrg = warp >> p.lg_split, s = warp & (p.split - 1);
  const int kb = s * KT / p.split, ke = (s + 1) * KT / p.split;

  // A batch: kBatch k-tiles of one 16-row group (4 x 16 B per lane each) + their e8m0 scales.
  // Rows past the matrix (R >= nrg) or k-tiles past the warp's slice are not loaded.
  auto load_batch = [&](int R, int k0, uint4 (&a)[kBatch][4], uint32_t (&sw8)[kBatch]) {
    const uint8_t* wb =
        p.w + (static_cast<int64_t>(R >> 3) * KT) * kFp8TileBytes + (R & 7) * 2048 + lane * 16;
    const uint8_t* sb = p.w_scale + static_cast<int64_t>(R >> 3) * KT;
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      if (k0 + i < ke) {
        const uint8_t* t = wb + static_cast<int64_t>(k0 + i) * kFp8TileBytes;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) a[i][ks] = ldg_stream(t + ks * 512);
        sw8[i] = __ldg(sb + k0 + i);
      }
    }
  };
  // Issue the first batch before the activations are quantised: its latency hides that work.
  uint4 cur[kBatch][4];
  uint32_t csw[kBatch];
  {
    const int r0 = blockIdx.x * p.groups + lrg;
    if (blockIdx.x < p.units && r0 < p.nrg && kb < ke) load_batch(r0, kb, cur, csw);
  }
  // Weights are independent of earlier kernels; x and y are not (PDL, see pdl_wait).
  gemv_detail::pdl_wait();
  gemv_detail::pdl_trigger();

  // Quantise x [m, k] per 1x128 block into xs/sxs (all of K).
  stage_act_e4m3<kDThreads>(p.x, p.m, p.k, KT, xs, L.xs_stride, sxs, p.k);
  __syncthreads();

  const BSources<NH> bs = b_sources<NH>(xs, L.xs_stride, sxs, p.m, KT, g, tq);

  const int ustride = gridDim.x * p.groups;
  for (int u = blockIdx.x; u < p.units; u += gridDim.x) {
    const int R = u * p.groups + lrg;
    float acc[NH][4];
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[h][r] = 0.f;
    if (R < p.nrg) {
      for (int k0 = kb; k0 < ke; k0 += kBatch) {
        // Next batch first (this slice's, else the next unit's first): loads stay in flight
        // while this batch's MMAs run.
        uint4 nxt[kBatch][4];
        uint32_t nsw[kBatch];
        if (k0 + kBatch < ke) {
          load_batch(R, k0 + kBatch, nxt, nsw);
        } else if (u + static_cast<int>(gridDim.x) < p.units && R + ustride < p.nrg) {
          load_batch(R + ustride, kb, nxt, nsw);
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int kk = k0 + i;
          if (kk < ke) fp8_tile_mma<NH>(cur[i], bs, kk, e8m0_to_f32(static_cast<uint8_t>(csw[i])), acc);
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) cur[i][ks] = nxt[i][ks];
          csw[i] = nsw[i];
        }
      }
    }
    split_reduce_store<NH>(red, warp, lane, p.split, s, R < p.nrg, acc, R, p.y, p.n, p.m);
  }
}

}  // namespace dsv4::cuda::direct_detail
