// FP8 block-scaled decode GEMV (spec §5.4) for M = 1..16 tokens on sm_90a: argument checks, the
// per-shape choice between the ring, direct and streaming kernels, their plans and launches (all
// with programmatic dependent launch). The activation quantisation of spec §5.1 runs inside the
// kernels, per CTA.
#include <algorithm>
#include <cstdint>

#include "dsv4/cuda/gemv.hpp"
#include "sm90_fp8_gemv_common.cuh"
#include "sm90_fp8_gemv_direct.cuh"
#include "sm90_fp8_gemv_ring.cuh"
#include "func_attr.hpp"

namespace dsv4::cuda {
using namespace gemv_detail;

namespace {
Plan fp8_plan(int64_t n, int64_t k, int m, const DeviceInfo& d) {
  return make_plan(kFp8, m <= 8 ? 1 : 2, m, 1, ceil_div(n, 128), ceil_div(k, 128), kFp8TileBytes,
                   d.sms, d.smem_optin, d.smem_per_sm);
}
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Direct-kernel plan: S warps per 16-row group (power of two <= 16 and <= the k-tiles), the
// smallest that gives every warp of a full wave (sms x 16 warps, 90 %) a row group or K slice.
// Measured: balancing units over SMs by a finer split (wq_b|indexer S = 4 instead of 1) was 2 us
// slower: longer per-warp K chains matter more than the last partial round of units.
struct DirectPlan {
  direct_detail::DParams p;
  int grid, nh, warps;
  size_t smem;
  bool ok;
};
DirectPlan direct_plan(int64_t n, int64_t k, int m, const DeviceInfo& d) {
  using namespace direct_detail;
  constexpr int warps = kDWarps;
  DirectPlan dp{};
  const int kt = static_cast<int>(ceil_div(k, 128));
  const int nrg = static_cast<int>(ceil_div(n, 128) * 8);
  int lg = 0;
  while (lg < 4 && (2 << lg) <= kt && int64_t{nrg} * (1 << lg) * 10 < int64_t{d.sms} * warps * 9) ++lg;
  dp.p.n = static_cast<int>(n);
  dp.p.k = static_cast<int>(k);
  dp.p.m = m;
  dp.p.kt = kt;
  dp.p.nrg = nrg;
  dp.p.split = 1 << lg;
  dp.p.lg_split = lg;
  dp.p.groups = warps >> lg;
  dp.p.units = static_cast<int>(ceil_div(nrg, dp.p.groups));
  dp.grid = std::min(dp.p.units, d.sms);
  dp.nh = m <= 8 ? 1 : 2;
  dp.smem = static_cast<size_t>(d_layout(m, kt, dp.nh, warps).total);
  dp.warps = warps;
  dp.ok = k <= (int64_t{1} << 20) && dp.smem <= static_cast<size_t>(d.smem_optin - 1024);
  return dp;
}
template <int NH>
cudaError_t launch_direct(const DirectPlan& dp, const DeviceInfo& d, cudaStream_t stream, bool pdl) {
  auto kern = direct_detail::fp8_direct_kernel<NH>;
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr =
      smem_opt_in([&] { return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin - 1024); });
  DSV4_GEMV_TRY(attr);
  return launch_ex(kern, dp.grid, direct_detail::kDThreads, dp.smem, stream, pdl, dp.p);
}
// Ring-kernel plan: S warps per 16-row group (S <= 8, <= the k-tiles) chosen to minimise the
// longest per-warp chain of pieces (rounds of units over the SMs x k-tiles per warp; ties: smaller
// S), one CTA of 8 warps per SM at most, and the deepest ring (4..8 slots of 2 KB per warp) that
// keeps the CTA within half an SM's shared memory (two CTAs per SM: PDL overlap), else within the
// opt-in limit.
struct RingPlan {
  ring_detail::RParams p;
  size_t smem;
  int nh;
  bool ok, two_per_sm;
};
RingPlan ring_plan(int64_t n, int64_t k, int m, const DeviceInfo& d) {
  using namespace ring_detail;
  RingPlan rp{};
  const int kt = static_cast<int>(ceil_div(k, 128));
  const int nrg = static_cast<int>(ceil_div(n, 128) * 8);
  int best_lg = 0;
  int64_t best_cost = -1;
  for (int lg = 0; lg <= 3 && (1 << lg) <= kt; ++lg) {
    const int64_t units = ceil_div(nrg, kRWarps >> lg);
    const int64_t cost = ceil_div(units, d.sms) * ceil_div(kt, 1 << lg);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_lg = lg;
    }
  }
  rp.nh = m <= 8 ? 1 : 2;
  rp.p.n = static_cast<int>(n);
  rp.p.k = static_cast<int>(k);
  rp.p.m = m;
  rp.p.kt = kt;
  rp.p.nrg = nrg;
  rp.p.lg_split = best_lg;
  rp.p.split = 1 << best_lg;
  rp.p.groups = kRWarps >> best_lg;
  rp.p.units = static_cast<int>(ceil_div(nrg, rp.p.groups));
  rp.p.grid = std::min(rp.p.units, d.sms);
  // Trigger first only when the grid covers every SM: measured 1.3-1.5 us faster on wq_b and
  // wq_b|indexer (132 CTAs), 1-2 us slower on shared w1|w3 and wo_b (128 CTAs), where the launches
  // in flight can double up on the idle SMs (docs/kernels.md, "PDL trigger").
  rp.p.trig_early = rp.p.grid == d.sms ? 1 : 0;
  rp.p.units_per_cta = static_cast<int>(ceil_div(rp.p.units, rp.p.grid));
  if (k > (int64_t{1} << 20) || int64_t{rp.p.units_per_cta} * kt > 8192) return rp;
  const int64_t half_sm = d.smem_per_sm / 2 - 1024, optin = d.smem_optin - 1024;
  for (int64_t budget : {half_sm, optin}) {
    for (int depth = kMaxDepth; depth >= 4 && !rp.ok; --depth) {
      const RLayout L = r_layout(m, kt, rp.nh, depth, rp.p.units_per_cta);
      if (L.total <= budget) {
        rp.ok = true;
        rp.two_per_sm = budget == half_sm;
        rp.p.depth = depth;
        rp.smem = static_cast<size_t>(L.total);
      }
    }
    if (rp.ok) break;
  }
  return rp;
}
template <int NH>
cudaError_t launch_ring(const RingPlan& rp, const DeviceInfo& d, cudaStream_t stream, bool pdl) {
  auto kern = ring_detail::fp8_ring_kernel<NH>;
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr =
      smem_opt_in([&] { return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin - 1024); });
  DSV4_GEMV_TRY(attr);
  return launch_ex(kern, rp.p.grid, ring_detail::kRThreads, rp.smem, stream, pdl, rp.p);
}

// Heuristic of kAuto: the direct kernel wherever its activations fit in shared memory
// (m * (ceil(k/128)*128 + 16) bytes + scales + 16 KB of split-K partials <= opt-in smem, i.e. up to
// k = 12K at m = 16). It was faster than the streaming kernel at every benchmarked shape and M
// (docs/performance.md, 2026-11-29); the streaming kernel serves larger m * k.
Fp8GemvPath choose(const DirectPlan& dp) {
  return dp.ok ? Fp8GemvPath::kDirect : Fp8GemvPath::kStream;
}
}  // namespace

static_assert(kGemvMaxTokens == gemv_detail::kMaxTokensCap, "workspace counters are sized for kGemvMaxTokens");

// The largest need of any m' <= m: a workspace sized for m serves every smaller m as well.
size_t sm90_fp8_gemv_workspace_bytes(int64_t n, int64_t k, int m) {
  DeviceInfo d;
  if (n < 1 || k < 1 || m < 1 || m > kGemvMaxTokens || device_info(&d) != cudaSuccess) return 0;
  size_t bytes = 0;
  for (int mm = 1; mm <= m; ++mm) bytes = std::max(bytes, fp8_plan(n, k, mm, d).ws_bytes);
  return bytes;
}

Fp8GemvPath sm90_fp8_gemv_choice(int64_t n, int64_t k, int m) {
  DeviceInfo d;
  if (n < 1 || k < 1 || m < 1 || m > kGemvMaxTokens || device_info(&d) != cudaSuccess)
    return Fp8GemvPath::kStream;
  const RingPlan rp = ring_plan(n, k, m, d);
  if (rp.ok && rp.two_per_sm) return Fp8GemvPath::kRing;
  return choose(direct_plan(n, k, m, d));
}

cudaError_t sm90_fp8_gemv(const uint8_t* w_tiled, const uint8_t* w_scale, int64_t n, int64_t k,
                          const uint16_t* x, int m, uint16_t* y, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream) {
  return sm90_fp8_gemv_path(Fp8GemvPath::kAuto, w_tiled, w_scale, n, k, x, m, y, workspace,
                            workspace_bytes, stream);
}

cudaError_t sm90_fp8_gemv_path(Fp8GemvPath path, const uint8_t* w_tiled, const uint8_t* w_scale,
                               int64_t n, int64_t k, const uint16_t* x, int m, uint16_t* y,
                               void* workspace, size_t workspace_bytes, cudaStream_t stream, bool pdl) {
  if (!w_tiled || !w_scale || !x || !y || !workspace) return cudaErrorInvalidValue;
  if (n < 1 || k < 8 || k % 8 != 0 || m < 1 || m > kGemvMaxTokens) return cudaErrorInvalidValue;
  if (n > (int64_t{1} << 30) || k > (int64_t{1} << 24)) return cudaErrorInvalidValue;
  if (!aligned16(w_tiled) || !aligned16(x) || !aligned16(workspace)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  const Plan pl = fp8_plan(n, k, m, d);
  if (pl.stages < 2 || workspace_bytes < pl.ws_bytes) return cudaErrorInvalidValue;
  if (path == Fp8GemvPath::kAuto || path == Fp8GemvPath::kRing) {
    RingPlan rp = ring_plan(n, k, m, d);
    if (rp.ok && (path == Fp8GemvPath::kRing || rp.two_per_sm)) {
      rp.p.w = w_tiled;
      rp.p.w_scale = w_scale;
      rp.p.x = x;
      rp.p.y = y;
      return rp.nh == 1 ? launch_ring<1>(rp, d, stream, pdl) : launch_ring<2>(rp, d, stream, pdl);
    }
    if (path == Fp8GemvPath::kRing) path = Fp8GemvPath::kAuto;
  }
  if (path != Fp8GemvPath::kStream) {
    DirectPlan dp = direct_plan(n, k, m, d);
    if (path == Fp8GemvPath::kAuto) path = choose(dp);
    if (path == Fp8GemvPath::kDirect && dp.ok) {
      dp.p.w = w_tiled;
      dp.p.w_scale = w_scale;
      dp.p.x = x;
      dp.p.y = y;
      return dp.nh == 1 ? launch_direct<1>(dp, d, stream, pdl) : launch_direct<2>(dp, d, stream, pdl);
    }
  }
  auto* ws = static_cast<uint8_t*>(workspace);
  Params p{};
  p.w = w_tiled;
  p.w_scale = w_scale;
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.nt = static_cast<int>(ceil_div(n, 128));
  p.kt = static_cast<int>(ceil_div(k, 128));
  p.x = x;
  p.m = m;
  p.top_k = 1;
  p.y = y;
  p.cnt1 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt1);
  p.cnt2 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt2);
  p.partials = reinterpret_cast<float*>(ws + pl.off_partials);
  // M tile: 8 token columns per mma for m <= 8, two for m <= 16 (changes the generated code).
  // Never more CTAs than tiles: idle CTAs would only add launch cost.
  Plan plc = pl;
  plc.grid = static_cast<int>(std::min<int64_t>(pl.grid, int64_t{p.nt} * p.kt));
  switch (m <= 8 ? 1 : 2) {
    case 1: return launch<kFp8, 1>(p, plc, d, stream, pdl);
    case 2: return launch<kFp8, 2>(p, plc, d, stream, pdl);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace dsv4::cuda
