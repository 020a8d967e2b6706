// FP8 decode linears on the tensor cores (contract: lib/cuda/kernels.hpp, "linear_small_mma.cu"):
// y = x'·Wᵀ for 1..8 rows of official-numerics FP8 linears (x FP8 1×128-quantised, W e4m3 with
// 128×128 e8m0 scales), the checkpoint's row-major weights.
//
// Why: on the CUDA cores every weight costs a decode (conversion-pipe cvt or integer shifts) and a
// multiply-add per row, and Nsight showed linear_small issue-bound (≈ 13 instructions per weight,
// the SM issuing two thirds of its cycles) at 1.3–1.5 TB/s on wq_b. mma.sync m16n8k32 e4m3 takes
// 16 weight rows × 32 inputs straight from the 16-byte loads, so the kernel is left with the loads.
//
// Numerics — the official FP8 linear: per 128-input block b, the tensor cores sum the exact
// products qx·qw of the block (four k32 MMAs into a fresh f32 accumulator), and the CUDA cores add
// that block sum × sx·sw (a power of two: exact) into the f32 result, block after block — the
// promotion every 128 inputs of DeepSeek's FP8 GEMM. The block sums are not an IEEE f32 sequence
// (the tensor cores' internal accumulation order and width), hence results within the f32
// summation bound of `linear`, not its bits.
//
// Layout trick: an MMA sums over its 32 k's in any order, so logical k of the fragments may map to
// any memory k as long as A and B use the same map. Lane (g = lane/4, t = lane%4) loads 16
// contiguous weight bytes [16t, 16t+16) of a 64-input half-block from rows g and g+8, and the
// same 16 bytes of x row g (B's column n = g) from shared memory; bytes 0–7 feed the first k32 MMA
// (a0,a2 | b0,b1), bytes 8–15 the second.
//
// Work split: a warp owns 16 output rows and a K range; a CTA of 8 warps = RG row groups × KS K
// splits (RG·KS = 8), chosen so the grid fills the GPU; the KS partials meet in shared memory and are
// added in split order (deterministic). x's R rows are quantised once per CTA into shared memory
// (e4m3 codes + the f32 scale per 128), row stride K + 64 bytes so the 16-byte reads of a quarter-warp
// hit distinct banks.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "dsv4/numerics.hpp"
#include "kernels.hpp"
#include "warp_util.cuh"
#include "func_attr.hpp"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = 8;
constexpr int kMaxRows = 8;   // the MMA's n
constexpr int kMaxK = 8192;   // staged x: 8 rows × (K + 64) bytes
constexpr int kDepth = 4;     // 128-input blocks of weights in flight per lane (4 × 64 B)
constexpr int kPad = 64;

struct Params {
  const uint8_t* w;
  const uint8_t* scale;
  int64_t scale_cols;
  const float* x;
  int64_t x_stride;
  const int32_t* x_rows;
  float* y;
  int64_t y_stride;
  int K, rows, rg_total;
  bool bf16_out;
};

using dev::ldg_stream;
using dev::warp_max_nonneg;

__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int KS>
__global__ void __launch_bounds__(kThreads, 2) linear_fp8_mma_kernel(const __grid_constant__ Params p) {
  constexpr int RG = kWarps / KS;
  extern __shared__ __align__(16) uint8_t smem[];
  const int stride = p.K + kPad;
  uint8_t* xq = smem;                                                        // [8][K + 64] e4m3
  float* sx = reinterpret_cast<float*>(smem + kMaxRows * stride);            // [8][K / 128]
  float* red = sx + kMaxRows * (p.K / 128);                                  // [8 warps][16][8]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int rg = blockIdx.x * RG + warp / KS, ks = warp % KS;
  const bool active = rg < p.rg_total;
  const int nblk = p.K / 128, per = nblk / KS, b0 = ks * per;

  // The first blocks' weights are requested before x is staged (they do not depend on it).
  const int64_t o0 = int64_t{active ? rg : 0} * 16;
  const uint8_t* wg = p.w + (o0 + g) * p.K + 16 * t;
  const uint8_t* wg8 = wg + int64_t{8} * p.K;
  uint4 buf[kDepth][4];
  auto load = [&](int b, uint4 (&v)[4]) {
    const int64_t off = int64_t{b} * 128;
    v[0] = ldg_stream(wg + off);
    v[1] = ldg_stream(wg8 + off);
    v[2] = ldg_stream(wg + off + 64);
    v[3] = ldg_stream(wg8 + off + 64);
  };
#pragma unroll
  for (int j = 0; j < kDepth; ++j)
    if (active && j < per) load(b0 + j, buf[j]);

  // Stage x: one warp per (row, 128-block), spec §5.1's quantisation (fp8_act_quant_dequant's
  // formula, the codes kept). A warp's loads are all issued before any is used (one L2 latency,
  // not one per block). Rows ≥ R stay unwritten: they feed only the MMA's output columns n ≥ R,
  // which are never stored.
  constexpr int kTasks = 8;  // (row, block) tasks per warp per pass
  const int ntask = p.rows * nblk;
  for (int base = warp; base < ntask; base += kWarps * kTasks) {
    float4 v[kTasks];
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const int task = base + j * kWarps;
      if (task < ntask) {
        const int r = task / nblk, b = task % nblk;
        const int64_t xr = p.x_rows ? int64_t{p.x_rows[r]} : r;
        v[j] = reinterpret_cast<const float4*>(p.x + xr * p.x_stride + b * 128)[lane];
      }
    }
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const int task = base + j * kWarps;
      if (task >= ntask) break;  // uniform over the warp
      const int r = task / nblk, b = task % nblk;
      float amax = fmaxf(fmaxf(fabsf(v[j].x), fabsf(v[j].y)), fmaxf(fabsf(v[j].z), fabsf(v[j].w)));
      amax = warp_max_nonneg(amax);
      const float s = e8m0_to_f32(fp8_act_scale_e8m0(amax));
      auto code = [s](float e) { return static_cast<uint32_t>(dev::fp8_act_code(e, s)); };
      reinterpret_cast<uint32_t*>(xq + r * stride + b * 128)[lane] =
          code(v[j].x) | code(v[j].y) << 8 | code(v[j].z) << 16 | code(v[j].w) << 24;
      if (lane == 0) sx[r * nblk + b] = s;
    }
  }
  __syncthreads();

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // (row g, n 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
  if (active) {
    const uint8_t* srow = p.scale + (o0 / 128) * p.scale_cols;
    const uint8_t* xg = xq + g * stride + 16 * t;
    const float* sx0 = sx + (2 * t) * nblk;
    const float* sx1 = sx0 + nblk;
    for (int bb = 0; bb < per; bb += kDepth) {
#pragma unroll
      for (int j = 0; j < kDepth; ++j) {
        const int i = bb + j;
        if (i >= per) break;
        const int b = b0 + i;
        const uint4 X0 = *reinterpret_cast<const uint4*>(xg + b * 128);
        const uint4 X1 = *reinterpret_cast<const uint4*>(xg + b * 128 + 64);
        float blk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_e4m3(blk, buf[j][0].x, buf[j][1].x, buf[j][0].y, buf[j][1].y, X0.x, X0.y);
        mma_e4m3(blk, buf[j][0].z, buf[j][1].z, buf[j][0].w, buf[j][1].w, X0.z, X0.w);
        mma_e4m3(blk, buf[j][2].x, buf[j][3].x, buf[j][2].y, buf[j][3].y, X1.x, X1.y);
        mma_e4m3(blk, buf[j][2].z, buf[j][3].z, buf[j][2].w, buf[j][3].w, X1.z, X1.w);
        if (i + kDepth < per) load(b + kDepth, buf[j]);  // refill the slot just consumed
        const float sw = e8m0_to_f32(__ldg(srow + b));
        const float f0 = sw * sx0[b], f1 = sw * sx1[b];  // powers of two: exact
        acc[0] = fmaf(blk[0], f0, acc[0]);
        acc[1] = fmaf(blk[1], f1, acc[1]);
        acc[2] = fmaf(blk[2], f0, acc[2]);
        acc[3] = fmaf(blk[3], f1, acc[3]);
      }
    }
  }

  // The K splits of a row group meet in shared memory, added in split order.
  float* mine = red + warp * 128;
  mine[g * 8 + 2 * t] = acc[0];
  mine[g * 8 + 2 * t + 1] = acc[1];
  mine[(g + 8) * 8 + 2 * t] = acc[2];
  mine[(g + 8) * 8 + 2 * t + 1] = acc[3];
  __syncthreads();
  for (int idx = threadIdx.x; idx < RG * 16 * p.rows; idx += kThreads) {
    const int n = idx % p.rows, row = (idx / p.rows) % 16, rgl = idx / (16 * p.rows);
    const int grp = blockIdx.x * RG + rgl;
    if (grp >= p.rg_total) continue;
    float v = 0.0f;
    for (int k = 0; k < KS; ++k) v += red[(rgl * KS + k) * 128 + row * 8 + n];
    p.y[int64_t{n} * p.y_stride + int64_t{grp} * 16 + row] = p.bf16_out ? round_bf16(v) : v;
  }
}

template <int KS>
cudaError_t launch(const Params& p, int ctas, size_t smem, cudaStream_t stream) {
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr = smem_opt_in([] {
    return cudaFuncSetAttribute(linear_fp8_mma_kernel<KS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(kMaxRows * (kMaxK + kPad) + kMaxRows * (kMaxK / 128) * 4 + kWarps * 128 * 4));
  });
  if (attr != cudaSuccess) return attr;
  linear_fp8_mma_kernel<KS><<<static_cast<unsigned>(ctas), kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t linear_small_mma(const LinearArgs& a, cudaStream_t stream) {
  const WeightView& w = a.w;
  // What this path takes (else NotSupported, before any launch): official FP8 linears of 1..8 rows,
  // 128×128 scale blocks, whole blocks of K, 16-row groups, 16-byte aligned rows; no expert stacks
  // or grouped outputs.
  if (a.rows < 1 || a.rows > kMaxRows || w.format != WeightFormat::fp8 || !a.quant_act || a.expert_ids ||
      a.out_group != 0 || !w.data || !w.scale || !a.x || !a.y)
    return cudaErrorNotSupported;
  if (w.block_out != 128 || w.block_in != 128 || w.in % 128 != 0 || w.in > kMaxK || w.out % 16 != 0 ||
      w.out / 16 > INT_MAX || w.scale_cols < w.in / 128 || reinterpret_cast<uintptr_t>(w.data) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || a.x_stride % 4 != 0 || a.x_stride < w.in || a.y_stride < w.out)
    return cudaErrorNotSupported;
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return cudaErrorNotSupported;
  Params p{};
  p.w = w.data;
  p.scale = w.scale;
  p.scale_cols = w.scale_cols;
  p.x = a.x;
  p.x_stride = a.x_stride;
  p.x_rows = a.x_rows;
  p.y = a.y;
  p.y_stride = a.y_stride;
  p.K = static_cast<int>(w.in);
  p.rows = static_cast<int>(a.rows);
  p.rg_total = static_cast<int>(w.out / 16);
  p.bf16_out = a.bf16_out;
  // Row groups per CTA: 8 (each warp a whole K) while that leaves a CTA for every SM, else split K
  // (KS must divide the K blocks); more CTAs than two per SM would run in a second wave.
  const int nblk = p.K / 128;
  int ks = 1;
  while (ks < kWarps && (p.rg_total + kWarps / ks - 1) / (kWarps / ks) < sms && nblk % (2 * ks) == 0) ks *= 2;
  const int rg_cta = kWarps / ks;
  const int ctas = (p.rg_total + rg_cta - 1) / rg_cta;
  const size_t smem = static_cast<size_t>(kMaxRows) * (p.K + kPad) + static_cast<size_t>(kMaxRows) * nblk * 4 +
                      static_cast<size_t>(kWarps) * 128 * 4;
  switch (ks) {
    case 1: return launch<1>(p, ctas, smem, stream);
    case 2: return launch<2>(p, ctas, smem, stream);
    case 4: return launch<4>(p, ctas, smem, stream);
    default: return launch<8>(p, ctas, smem, stream);
  }
}

}  // namespace dsv4::cuda
