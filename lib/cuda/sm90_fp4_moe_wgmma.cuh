// w1|w3 + SwiGLU stage of the ring MoE pair on the FP8 tensor cores (wgmma), sm_90a.
// Same contract, pieces, ring and numerics as moe_w13_ring_kernel (sm90_fp4_moe_ring.cuh), but a
// warpgroup (4 warps = 64 rows) runs wgmma.m64n8k32.e4m3 with the FP4 codes placed into e4m3 A
// fragments in registers (value x 2^-6, exact) and the quantised activations as B in shared
// memory (columns = the m tokens, zero past m), instead of per-warp f16 mma.sync: half the integer
// decode work per code and no e4m3->f16 conversions. A unit is (expert chunk, 64-row block); the
// two warpgroups of a CTA take two units or the two K halves of one (reduced in warp order).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_fp4_moe_ring.cuh"

namespace dsv4::cuda::moe_ring_detail {

// B operand layout of wgmma k32 e4m3 without swizzle: per 32-input step s, 256 bytes = two "core
// matrices" (inputs 0..15, 16..31) of 8 columns x 16 bytes; LBO = 128 (K direction).
__device__ __forceinline__ uint64_t wg_desc_b(const void* smem_ptr) {
  const uint64_t addr = static_cast<uint64_t>(__cvta_generic_to_shared(smem_ptr));
  return ((addr & 0x3ffffu) >> 4) | (uint64_t{128 >> 4} << 16) | (uint64_t{256 >> 4} << 32);
}
// D = A x B (scale-d false: the accumulators' old values are ignored).
__device__ __forceinline__ void wgmma_e4m3_rs(float (&d)[4], const uint32_t (&a)[4], uint64_t desc) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %9, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {%0,%1,%2,%3}, {%4,%5,%6,%7}, %8, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(0));
}
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

struct WgLayout {
  int bars, routing, red, xs, sxs, ring, total;
};
// xs: e4m3 B tiles, kt*4 steps x 256 bytes; sxs: f32 [m][kt]; red: f32 [8 warps][8][32].
__host__ __device__ inline WgLayout wg_layout(int m, int kt, int depth) {
  WgLayout l{};
  l.bars = 0;
  l.routing = 8 * kMaxDepth * 8;
  l.red = l.routing + (static_cast<int>(sizeof(Routing)) + 15) / 16 * 16;
  l.xs = (l.red + 8 * 8 * 32 * 4 + 127) / 128 * 128;
  l.sxs = l.xs + kt * 4 * 256;
  l.ring = (l.sxs + m * kt * 4 + 127) / 128 * 128;
  l.total = l.ring + 8 * depth * kSlot;
  return l;
}

__global__ void __launch_bounds__(256, 1) moe_w13_wg_kernel(const __grid_constant__ MRParams p) {
  const uint32_t trace_t0 = p.trace ? trace_clock() : 0u;
  extern __shared__ __align__(128) uint8_t smem[];
  const WgLayout L = wg_layout(p.m, p.kt, p.depth);
  Routing* rt = reinterpret_cast<Routing*>(smem + L.routing);
  float* red = reinterpret_cast<float*>(smem + L.red);
  uint8_t* xs = smem + L.xs;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int wg = warp >> 2, wq = warp & 3;
  const int KT = p.kt, D = p.depth, grid = p.grid;
  gemv_detail::WarpRing ring(reinterpret_cast<uint64_t*>(smem + L.bars) + warp * kMaxDepth,
                             smem + L.ring + warp * D * kSlot, kSlot, D);

  gemv_detail::pdl_wait();
  gemv_detail::pdl_trigger();
  route(p, rt);
  const int nblk = p.nt * 2, U = rt->nchunks * nblk;  // 64-row blocks per expert, units
  // S = 1: a CTA unit is two units (one per warpgroup); S = 2: one unit, K halves per warpgroup.
  const int64_t c1 = (int64_t{(U + 1) / 2} + grid - 1) / grid * KT;
  const int64_t c2 = (int64_t{U} + grid - 1) / grid * ((KT + 1) / 2);
  const int S = (KT >= 2 && c2 < c1) ? 2 : 1;
  const int CU = S == 1 ? (U + 1) / 2 : U;
  const int s = S == 2 ? wg : 0;
  const int kb = s * KT / S, ke = (s + 1) * KT / S, nk = ke - kb;
  const int bx = static_cast<int>(blockIdx.x);
  const int nu = CU > bx ? (CU - bx + grid - 1) / grid : 0;
  auto unit_of = [&](int j) { return S == 1 ? (bx + j * grid) * 2 + wg : bx + j * grid; };
  int nu_w = 0;
  while (nu_w < nu && unit_of(nu_w) < U) ++nu_w;
  const int total = nu_w * nk;

  int ij = 0, ic = 0, issued = 0;
  auto issue_next = [&]() {
    const int f = unit_of(ij), c = f / nblk, rg = (f - c * nblk) * 4 + wq;
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

  // x quantised per 1x128 (§5.1) into the B tiles: 8 threads x 16 values per block; 16 values =
  // one core-matrix row (token t, inputs k0..k0+15). Columns t >= m stay zero.
  for (int i = tid; i < KT * 4 * 256 / 16; i += 256) reinterpret_cast<uint4*>(xs)[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  {
    const int sub = tid & 7, nblk_x = p.m * KT;
    for (int q0 = 0; q0 < nblk_x; q0 += 256 / 8) {
      const int q = q0 + (tid >> 3);
      const bool act = q < nblk_x;
      const int t = act ? q / KT : 0, b = act ? q % KT : 0, k0 = b * 128 + sub * 16;
      uint4 u[2] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
#pragma unroll
      for (int half = 0; half < 2; ++half)
        if (act && k0 + half * 8 < p.k)
          u[half] = __ldg(reinterpret_cast<const uint4*>(p.x + t * p.x_stride + k0 + half * 8));
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
        *reinterpret_cast<uint4*>(xs + (k0 / 32) * 256 + ((k0 / 16) & 1) * 128 + t * 16) = e8;
        // FP4 codes decode to value x 2^-6 in e4m3: 2^6 rides on the x scale (as in the streaming pair).
        if (sub == 0) sxs[t * KT + b] = e8m0_to_f32(static_cast<uint8_t>(e)) * 64.f;
      }
    }
  }
  // The B tiles are read by the async proxy (wgmma): order the generic-proxy stores before it.
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();

  const float* sxc[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) sxc[e] = sxs + min(2 * tq + e, p.m - 1) * KT;
  for (int j = 0; j < nu; ++j) {
    const bool valid = j < nu_w;
    const int f = unit_of(j);
    const int c = valid ? f / nblk : 0, rb = valid ? f - c * nblk : 0;
    float acc[2][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[a][r] = 0.f;
    if (valid) {
      for (int kk = kb; kk < ke; ++kk) {
        uint4 w4[2][2];
        uint32_t sc[2][2];
        load_w13_piece(ring.wait(), lane, g, w4, sc);
        __syncwarp();
        if (lane == 0 && issued < total) issue_next();
        ring.next();
        uint32_t a[2][4][4];
#pragma unroll
        for (int mat = 0; mat < 2; ++mat)
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) {
            const uint4& q = w4[mat][ks / 2];
            const uint32_t wgd = (ks & 1) ? q.z : q.x, wg8 = (ks & 1) ? q.w : q.y;
            a[mat][ks][0] = gemv_detail::fp4_lo_to_e4m3(wgd);
            a[mat][ks][1] = gemv_detail::fp4_lo_to_e4m3(wg8);
            a[mat][ks][2] = gemv_detail::fp4_hi_to_e4m3(wgd);
            a[mat][ks][3] = gemv_detail::fp4_hi_to_e4m3(wg8);
          }
        float d[2][4][4];
#pragma unroll
        for (int mat = 0; mat < 2; ++mat)
#pragma unroll
          for (int ks = 0; ks < 4; ++ks)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              d[mat][ks][r] = 0.f;
              fence_operand(d[mat][ks][r]);
            }
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
        for (int mat = 0; mat < 2; ++mat)
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) wgmma_e4m3_rs(d[mat][ks], a[mat][ks], wg_desc_b(xs + (kk * 4 + ks) * 256));
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#pragma unroll
        for (int mat = 0; mat < 2; ++mat)
#pragma unroll
          for (int ks = 0; ks < 4; ++ks)
#pragma unroll
            for (int r = 0; r < 4; ++r) fence_operand(d[mat][ks][r]);
        const float s0 = sxc[0][kk], s1 = sxc[1][kk];
#pragma unroll
        for (int mat = 0; mat < 2; ++mat) {
          float tt[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) {
            const float swg = e8m0_fast((sc[mat][0] >> (8 * ks)) & 0xffu);
            const float swg8 = e8m0_fast((sc[mat][1] >> (8 * ks)) & 0xffu);
            tt[0] = fmaf(d[mat][ks][0], swg, tt[0]);
            tt[1] = fmaf(d[mat][ks][1], swg, tt[1]);
            tt[2] = fmaf(d[mat][ks][2], swg8, tt[2]);
            tt[3] = fmaf(d[mat][ks][3], swg8, tt[3]);
          }
          acc[mat][0] = fmaf(tt[0], s0, acc[mat][0]);
          acc[mat][1] = fmaf(tt[1], s1, acc[mat][1]);
          acc[mat][2] = fmaf(tt[2], s0, acc[mat][2]);
          acc[mat][3] = fmaf(tt[3], s1, acc[mat][3]);
        }
      }
    }
    if (S == 2) {  // the two K halves: warpgroup 0's partial first, then warpgroup 1's
      float* mine = red + warp * (8 * 32) + lane;
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int r = 0; r < 4; ++r) mine[(a * 4 + r) * 32] = acc[a][r];
      __syncthreads();
      if (wg == 0 && valid) {
        const float* other = red + (warp + 4) * (8 * 32) + lane;
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[a][r] = mine[(a * 4 + r) * 32] + other[(a * 4 + r) * 32];
      }
    }
    if ((S == 1 || wg == 0) && valid) {
      // Columns are tokens: every slot of the chunk takes its token's column.
      const int cfirst = rt->chunk_first[c], ccount = rt->chunk_count[c];
      for (int i = 0; i < ccount; ++i) {
        const int pair = rt->sorted[cfirst + i], t = pair / p.top_k;
        if ((t >> 1) != tq) continue;
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          const int row = (rb * 4 + wq) * 16 + g + 8 * hi;
          if (row >= p.n) continue;
          // static register indices (a runtime index would put acc in local memory)
          const float ga = (t & 1) ? acc[0][2 * hi + 1] : acc[0][2 * hi];
          const float ua = (t & 1) ? acc[1][2 * hi + 1] : acc[1][2 * hi];
          p.out[static_cast<int64_t>(pair) * p.out_stride + row] =
              f32_to_bf16(gemv_detail::swiglu_weighted(ga, ua, rt->weight[pair]));
        }
      }
    }
    if (S == 2) __syncthreads();  // red is reused by the next unit
  }
  trace_cta(p, trace_t0);
}

}  // namespace dsv4::cuda::moe_ring_detail
