// "Ring" FP8 block-scaled decode GEMV (spec §5.4), M = 1..16, sm_90a. Same work split, weight layout
// and numerics as the direct kernel (sm90_fp8_gemv_direct.cuh), but every warp streams its A
// fragments (2 KB per 16-row group and 128-input tile) through its own ring of `depth` shared-memory
// slots with cp.async.bulk + one mbarrier per slot: no producer warp, no cross-warp handshake, no
// registers held by loads in flight. 8 warps and <= ~113 KB of shared memory per CTA, so two CTAs fit
// an SM: with programmatic dependent launch the next launch's CTAs sit beside this one's and fill
// their rings (weights only) before pdl_wait(), which keeps HBM busy across the kernel boundary.
// Tile scales are staged in shared memory once per CTA (also before pdl_wait).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_fp8_gemv_common.cuh"
#include "sm90_fp8_gemv_direct.cuh"

namespace dsv4::cuda::ring_detail {

constexpr int kRWarps = 8;
constexpr int kRThreads = kRWarps * 32;
constexpr int kPieceBytes = 2048;  // one warp's A fragments of one 128x128 tile (16 rows)
constexpr int kMaxDepth = 8;

struct RParams {
  const uint8_t* w;        // fp8_relayout tiles
  const uint8_t* w_scale;  // e8m0 [nt, kt]
  const uint16_t* x;       // bf16 [m, k]
  uint16_t* y;             // bf16 [m, n]
  int n, k, m, kt, nrg;    // nrg = 16-row groups = nt * 8
  int split, lg_split, groups, units, grid, depth, units_per_cta;
  int trig_early;  // 1: pdl_trigger() first (see pdl_trigger), else after pdl_wait()
};

struct RLayout {
  int bars, red, sw, xs, xs_stride, sxs, ring, total;
};
// bars: kRWarps*depth mbarriers; red: f32 [kRWarps][NH*4][32] split-K partials; sw: f32 tile scales
// [units_per_cta][kt]; xs: e4m3 [m][kt*128 + 16]; sxs: f32 [m][kt]; ring: [kRWarps][depth][2 KB].
__host__ __device__ inline RLayout r_layout(int m, int kt, int nh, int depth, int units_per_cta) {
  RLayout l{};
  l.bars = 0;
  l.red = kRWarps * kMaxDepth * 8;
  l.sw = l.red + kRWarps * nh * 4 * 32 * 4;
  l.xs = l.sw + (units_per_cta * kt * 4 + 15) / 16 * 16;
  l.xs_stride = kt * 128 + 16;
  l.sxs = l.xs + (m * l.xs_stride + 15) / 16 * 16;
  l.ring = (l.sxs + m * kt * 4 + 127) / 128 * 128;
  l.total = l.ring + kRWarps * depth * kPieceBytes;
  return l;
}

template <int NH>
__global__ void __launch_bounds__(kRThreads, 2) fp8_ring_kernel(const __grid_constant__ RParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  const RLayout L = r_layout(p.m, p.kt, NH, p.depth, p.units_per_cta);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L.bars);
  float* red = reinterpret_cast<float*>(smem + L.red);
  float* sw = reinterpret_cast<float*>(smem + L.sw);
  uint8_t* xs = smem + L.xs;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int KT = p.kt, D = p.depth, G = p.groups;
  if (p.trig_early) gemv_detail::pdl_trigger();
  const int lrg = warp >> p.lg_split, s = warp & (p.split - 1);
  const int kb = s * KT / p.split, ke = (s + 1) * KT / p.split, nk = ke - kb;
  gemv_detail::WarpRing ring(bars + warp * kMaxDepth, smem + L.ring + warp * D * kPieceBytes, kPieceBytes, D);
  // Units of this CTA: u_j = blockIdx.x + j*grid; the warp's row group in unit j is u_j*G + lrg.
  // Valid (row group < nrg) units form a prefix j < nu_w.
  const int nu = (p.units - static_cast<int>(blockIdx.x) + p.grid - 1) / p.grid;
  int nu_w = 0;
  while (nu_w < nu && (static_cast<int>(blockIdx.x) + nu_w * p.grid) * G + lrg < p.nrg) ++nu_w;
  const int total = nu_w * nk;

  // Lane 0 issues piece i = (unit j, k-tile kb + c) in order; the cursor (ij, ic) runs ahead.
  int ij = 0, ic = 0, issued = 0;
  auto issue_next = [&]() {
    const int R = (static_cast<int>(blockIdx.x) + ij * p.grid) * G + lrg;
    ring.issue(p.w + (static_cast<int64_t>(R >> 3) * KT + kb + ic) * kFp8TileBytes + (R & 7) * kPieceBytes);
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
  // Tile scales of every unit of this CTA (one 128-row tile per unit: G divides 8).
  for (int idx = tid; idx < nu * KT; idx += kRThreads) {
    const int j = idx / KT, kt = idx - j * KT;
    const int rt = ((static_cast<int>(blockIdx.x) + j * p.grid) * G) >> 3;
    sw[idx] = e8m0_to_f32(__ldg(p.w_scale + static_cast<int64_t>(rt) * KT + kt));
  }
  // Weights and their scales are independent of earlier kernels; x and y are not.
  gemv_detail::pdl_wait();
  if (!p.trig_early) gemv_detail::pdl_trigger();
  direct_detail::stage_act_e4m3<kRThreads>(p.x, p.m, p.k, KT, xs, L.xs_stride, sxs, p.k);
  __syncthreads();
  const direct_detail::BSources<NH> bs = direct_detail::b_sources<NH>(xs, L.xs_stride, sxs, p.m, KT, g, tq);

  for (int j = 0; j < nu; ++j) {
    const int R = (static_cast<int>(blockIdx.x) + j * p.grid) * G + lrg;
    float acc[NH][4];
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[h][r] = 0.f;
    if (j < nu_w) {
      for (int kk = kb; kk < ke; ++kk) {
        const uint8_t* piece = ring.wait() + lane * 16;
        uint4 a[4];
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) a[ks] = *reinterpret_cast<const uint4*>(piece + ks * 512);
        __syncwarp();  // every lane has its fragments: the slot may be refilled
        if (lane == 0 && issued < total) issue_next();
        ring.next();
        direct_detail::fp8_tile_mma<NH>(a, bs, kk, sw[j * KT + kk], acc);
      }
    }
    direct_detail::split_reduce_store<NH>(red, warp, lane, p.split, s, j < nu_w, acc, R, p.y, p.n, p.m);
  }
}

}  // namespace dsv4::cuda::ring_detail
