// FP4 (e2m1, e8m0 per 32) routed-expert MoE for decode, M = 1..16 tokens, on sm_90a: stage 1 runs
// every selected expert's w1|w3 in one launch with the clamped SwiGLU and the routing weight;
// stage 2 runs every selected w2 and sums the experts. Two pairs: the streaming pair (gemv_kernel,
// h re-quantised per §5.1 in the w1|w3 epilogue, any m) and the ring pair (sm90_fp4_moe_ring.cuh,
// bf16 h, quantised by w2 itself; m <= 8). Argument checks, plans, workspace layout and launches
// here. Expert ids and weights are read on the device (no host sync).
#include <algorithm>
#include <cstdint>

#include "dsv4/cuda/gemv.hpp"
#include "sm90_fp4_moe_ring.cuh"
#include "sm90_fp4_moe_wgmma.cuh"
#include "sm90_fp8_gemv_common.cuh"
#include "func_attr.hpp"

namespace dsv4::cuda {
using namespace gemv_detail;

namespace {
int nh_for(int m) { return m <= 8 ? 1 : 2; }
Plan w13_plan(int64_t hidden, int64_t inter, int m, int top_k, const DeviceInfo& d) {
  return make_plan(kFp4W13, nh_for(m), m, top_k, ceil_div(inter, 128), fp4_w13_k_tiles(hidden),
                   kFp4TileBytes, d.sms, d.smem_optin, d.smem_per_sm);
}
Plan w2_plan(int64_t hidden, int64_t inter, int m, int top_k, const DeviceInfo& d) {
  return make_plan(kFp4W2, nh_for(m), m, top_k, ceil_div(hidden, 128), fp4_w2_k_tiles(inter),
                   kFp4TileBytes, d.sms, d.smem_optin, d.smem_per_sm);
}
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
bool shape_ok(int num_experts, int64_t hidden, int64_t inter, int m, int top_k) {
  switch (top_k) {  // the routing tables are sized for 16 tokens x 6 slots
    case 4:
    case 6: break;
    default: return false;
  }
  return num_experts >= 1 && num_experts <= (1 << 20) && hidden >= 8 && hidden % 8 == 0 && hidden <= (int64_t{1} << 20) &&
         inter >= 2 && inter % 2 == 0 && inter <= (int64_t{1} << 20) && m >= 1 &&
         m <= kGemvMaxTokens;
}
// Ring pair plans (sm90_fp4_moe_ring.cuh). w13: grid = min(SMs, flat units at S = 8); the split
// is chosen on the device once the number of expert chunks is known. w2: G2 row groups per CTA
// unit minimising rounds x pieces per warp for the worst case (every slot its own expert; ties:
// larger G2), jmax partial slots per warp. Depth: the deepest ring (8..3 slots) within half an SM's
// shared memory, else within the opt-in limit; either way the CTA then asks for more than half (one
// CTA per SM, see the end of ring_moe_plan).
struct RingMoePlan {
  moe_ring_detail::MRParams p;
  size_t smem;
  int warps;
  bool ok;
};
bool ring_shape_ok(int64_t hidden, int64_t inter, int m) {
  return m <= moe_ring_detail::kMaxM && inter % 8 == 0 && hidden % 8 == 0;
}
// Dynamic shared memory that keeps a second CTA (of any of our ring-type kernels) off the SM:
// two CTAs with it and the 1 KB the driver reserves per CTA exceed the SM's shared memory.
int64_t half_sm_exclusive(const DeviceInfo& d) { return d.smem_per_sm / 2 - 1024 + 128; }
// wgmma: the warpgroup w1|w3 kernel (sm90_fp4_moe_wgmma.cuh; w2 must be false).
RingMoePlan ring_moe_plan(bool w2, int64_t hidden, int64_t inter, int m, int top_k, const DeviceInfo& d,
                          int warps = 0, bool wgmma = false) {
  using namespace moe_ring_detail;
  RingMoePlan rp{};
  rp.warps = warps == 16 && !wgmma ? 16 : 8;  // 8 measured faster (docs/kernels.md)
  if (!ring_shape_ok(hidden, inter, m)) return rp;
  const int P = m * top_k;
  auto& p = rp.p;
  p.m = m;
  p.top_k = top_k;
  p.n = static_cast<int>(w2 ? hidden : inter);
  p.k = static_cast<int>(w2 ? inter : hidden);
  p.nt = static_cast<int>(ceil_div(p.n, 128));
  p.kt = static_cast<int>(w2 ? fp4_w2_k_tiles(inter) : fp4_w13_k_tiles(hidden));
  p.g2 = 1;
  p.jmax = 1;
  if (!w2) {  // units: 16-row groups (ring) or 64-row blocks (wgmma) of every slot's expert
    p.grid = static_cast<int>(std::min<int64_t>(d.sms, int64_t{P} * p.nt * (wgmma ? 2 : 8)));
  } else {
    const int nrg = p.nt * 8;
    int64_t best = -1;
    for (int g2 = 8; g2 >= 1; g2 /= 2) {
      const int64_t cu = nrg / g2, grid = std::min<int64_t>(cu, d.sms);
      const int64_t cost = ceil_div(cu, grid) * ceil_div(int64_t{g2} * P * p.kt, rp.warps);
      if (best < 0 || cost < best) {
        best = cost;
        p.g2 = g2;
      }
    }
    p.grid = std::min(nrg / p.g2, d.sms);
    p.jmax = static_cast<int>(ceil_div(ceil_div(int64_t{p.g2} * P * p.kt, rp.warps), p.kt)) + 1;
  }
  // The ring depth: the deepest within half an SM (a depth measured well when two CTAs shared an
  // SM; deeper rings measured slower even alone), else within the opt-in limit. 16 warps only ever
  // used the opt-in budget.
  const int64_t half_sm = rp.warps == 8 ? d.smem_per_sm / 2 - 1024 : 0, optin = d.smem_optin - 1024;
  for (int64_t budget : {half_sm, optin}) {
    for (int depth = kMaxDepth; depth >= 3 && !rp.ok; --depth) {
      const int total = wgmma ? wg_layout(m, p.kt, depth).total
                              : mr_layout(w2, rp.warps, m, top_k, p.kt, depth, p.g2, p.jmax).total;
      if (total <= budget) {
        rp.ok = true;
        p.depth = depth;
        rp.smem = static_cast<size_t>(total);
      }
    }
    if (rp.ok) break;
  }
  // One CTA per SM, always: with PDL, a launch whose CTAs cannot sit beside the running kernel's
  // gets them placed as SMs free up, two on each of the first SMs to free (measured: ~60 of 132 SMs
  // doing the whole launch, 25-40 % slower pairs; docs/kernels.md "Placement"). Asking for more
  // than half an SM's shared memory rules that out; the ring depth stays the one chosen above
  // (deeper rings measured slower).
  rp.smem = std::max<size_t>(rp.smem, static_cast<size_t>(half_sm_exclusive(d)));
  return rp;
}
// Operands of a ring-pair w2 launch.
void set_w2_operands(moe_ring_detail::MRParams& p, const uint8_t* w2, int num_experts, int64_t hidden,
                     int64_t inter, const uint16_t* h, const int32_t* ids, uint16_t* y, bool ids_early) {
  p.w = w2;
  p.expert_stride = static_cast<int64_t>(fp4_w2_expert_bytes(hidden, inter));
  p.num_experts = num_experts;
  p.x = h;
  p.x_stride = sm90_fp4_moe_h_stride(inter);
  p.ids = ids;
  p.topw = nullptr;
  p.out = y;
  p.out_stride = hidden;
  p.ids_early = ids_early ? 1 : 0;
}
// Operands of a ring-pair w1|w3 launch (the ring or the wgmma kernel).
void set_w13_operands(moe_ring_detail::MRParams& p, const uint8_t* w13, int num_experts, int64_t hidden,
                      int64_t inter, const uint16_t* x, const int32_t* ids, const float* topw, uint16_t* h) {
  p.w = w13;
  p.expert_stride = static_cast<int64_t>(fp4_w13_expert_bytes(inter, hidden));
  p.num_experts = num_experts;
  p.x = x;
  p.x_stride = hidden;
  p.ids = ids;
  p.topw = topw;
  p.out = h;
  p.out_stride = sm90_fp4_moe_h_stride(inter);
}

// One instantiation (and one smem-limit static) per kernel: both kernels share a type.
template <auto kern>
cudaError_t launch_ring_moe(const RingMoePlan& rp, const DeviceInfo& d, cudaStream_t stream, bool pdl) {
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr =
      smem_opt_in([&] { return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin - 1024); });
  DSV4_GEMV_TRY(attr);
  return launch_ex(kern, rp.p.grid, rp.warps * 32, rp.smem, stream, pdl, rp.p);
}

struct MoeWs {
  size_t w13 = 0, w2 = 0, hq = 0, hs = 0, total = 0;
};
// Regions: [w1|w3 streaming workspace][w2 streaming workspace][hq][hs]. The first two are sized
// for the largest m so that the w2 kernel's counters sit at the same offset for every m (a
// workspace shared by launches of different m must never show one's partials as the other's
// counters). The ring pair keeps h (bf16) in the hq/hs area, never over counters.
MoeWs moe_ws(int64_t hidden, int64_t inter, int m, int top_k, const DeviceInfo& d) {
  MoeWs w;
  const int64_t pairs = int64_t{m} * top_k, stride = sm90_fp4_moe_hq_stride(inter);
  size_t b13 = 0, b2 = 0;
  for (int mm = 1; mm <= kGemvMaxTokens; ++mm) {
    b13 = std::max(b13, w13_plan(hidden, inter, mm, top_k, d).ws_bytes);
    b2 = std::max(b2, w2_plan(hidden, inter, mm, top_k, d).ws_bytes);
  }
  w.w13 = 0;
  w.w2 = align256(b13);
  w.hq = w.w2 + align256(b2);
  w.hs = w.hq + align256(static_cast<size_t>(pairs * stride));
  w.total = w.hs + align256(static_cast<size_t>(pairs * (stride / 128)) * 4);
  w.total = std::max(w.total, w.hq + align256(static_cast<size_t>(pairs * sm90_fp4_moe_h_stride(inter)) * 2));
  return w;
}
}  // namespace

int64_t sm90_fp4_moe_hq_stride(int64_t inter) { return fp4_w2_k_tiles(inter) * 32 * kFp4W2Ks; }
int64_t sm90_fp4_moe_h_stride(int64_t inter) { return fp4_w2_k_tiles(inter) * 32 * kFp4W2Ks; }

bool sm90_fp4_moe_ring_ok(int64_t hidden, int64_t inter, int m, int top_k, int warps) {
  DeviceInfo d;
  if (!shape_ok(1, hidden, inter, m, top_k) || device_info(&d) != cudaSuccess) return false;
  return ring_moe_plan(false, hidden, inter, m, top_k, d, warps).ok &&
         ring_moe_plan(true, hidden, inter, m, top_k, d, warps).ok;
}

cudaError_t sm90_fp4_moe_w13_ring(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                                  const uint16_t* x, int m, const int32_t* topk_ids,
                                  const float* topk_weights, int top_k, uint16_t* h,
                                  cudaStream_t stream, bool pdl, int warps) {
  if (!w13 || !x || !topk_ids || !topk_weights || !h) return cudaErrorInvalidValue;
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(w13) || !aligned16(x) || !aligned16(h)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  RingMoePlan rp = ring_moe_plan(false, hidden, inter, m, top_k, d, warps);
  if (!rp.ok) return cudaErrorInvalidValue;
  set_w13_operands(rp.p, w13, num_experts, hidden, inter, x, topk_ids, topk_weights, h);
  return rp.warps == 8 ? launch_ring_moe<moe_ring_detail::moe_w13_ring_kernel<8>>(rp, d, stream, pdl)
                       : launch_ring_moe<moe_ring_detail::moe_w13_ring_kernel<16>>(rp, d, stream, pdl);
}

cudaError_t sm90_fp4_moe_w2_ring_variant(int variant, const uint8_t* w2, int num_experts, int64_t hidden,
                                         int64_t inter, const uint16_t* h, int m, const int32_t* topk_ids,
                                         int top_k, uint16_t* y, cudaStream_t stream, bool pdl, bool ids_early,
                                         int warps);

cudaError_t sm90_fp4_moe_w2_ring(const uint8_t* w2, int num_experts, int64_t hidden, int64_t inter,
                                 const uint16_t* h, int m, const int32_t* topk_ids, int top_k,
                                 uint16_t* y, cudaStream_t stream, bool pdl, bool ids_early, int warps) {
  return sm90_fp4_moe_w2_ring_variant(0, w2, num_experts, hidden, inter, h, m, topk_ids, top_k, y, stream, pdl,
                                      ids_early, warps);
}

// wgmma w1|w3 (include/dsv4/cuda/gemv.hpp): same contract as sm90_fp4_moe_w13_ring.
cudaError_t sm90_fp4_moe_w13_wgmma(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                                   const uint16_t* x, int m, const int32_t* topk_ids,
                                   const float* topk_weights, int top_k, uint16_t* h, cudaStream_t stream,
                                   bool pdl) {
  if (!w13 || !x || !topk_ids || !topk_weights || !h) return cudaErrorInvalidValue;
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(w13) || !aligned16(x) || !aligned16(h)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  RingMoePlan rp = ring_moe_plan(false, hidden, inter, m, top_k, d, 8, true);
  if (!rp.ok) return cudaErrorInvalidValue;
  set_w13_operands(rp.p, w13, num_experts, hidden, inter, x, topk_ids, topk_weights, h);
  return launch_ring_moe<moe_ring_detail::moe_w13_wg_kernel>(rp, d, stream, pdl);
}

// Diagnostic entry (lib/cuda/gemv_diag.hpp): variant 1..3 are timing-only kernels.
cudaError_t sm90_fp4_moe_w2_ring_variant(int variant, const uint8_t* w2, int num_experts, int64_t hidden,
                                         int64_t inter, const uint16_t* h, int m, const int32_t* topk_ids,
                                         int top_k, uint16_t* y, cudaStream_t stream, bool pdl, bool ids_early,
                                         int warps) {
  if (variant < 0 || variant > 3) return cudaErrorInvalidValue;
  if (!w2 || !h || !topk_ids || !y) return cudaErrorInvalidValue;
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(w2) || !aligned16(h)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  RingMoePlan rp = ring_moe_plan(true, hidden, inter, m, top_k, d, warps);
  if (!rp.ok) return cudaErrorInvalidValue;
  set_w2_operands(rp.p, w2, num_experts, hidden, inter, h, topk_ids, y, ids_early);
  using namespace moe_ring_detail;
  if (rp.warps == 16) return launch_ring_moe<moe_w2_ring_kernel<16>>(rp, d, stream, pdl);
  switch (variant) {
    case 1: return launch_ring_moe<moe_w2_ring_kernel<8, 1>>(rp, d, stream, pdl);
    case 2: return launch_ring_moe<moe_w2_ring_kernel<8, 2>>(rp, d, stream, pdl);
    case 3: return launch_ring_moe<moe_w2_ring_kernel<8, 3>>(rp, d, stream, pdl);
    default: return launch_ring_moe<moe_w2_ring_kernel<8>>(rp, d, stream, pdl);
  }
}

// Diagnostic (gemv_diag.hpp): one ring-type pair with per-CTA placement traces.
cudaError_t sm90_fp4_moe_pair_traced(bool wgmma, const uint8_t* w13, const uint8_t* w2, int num_experts,
                                     int64_t hidden, int64_t inter, const uint16_t* x, int m,
                                     const int32_t* topk_ids, const float* topk_weights, int top_k, uint16_t* h,
                                     uint16_t* y, cudaStream_t stream, uint32_t* trace13, uint32_t* trace2,
                                     int* grid13, int* grid2) {
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  RingMoePlan r13 = ring_moe_plan(false, hidden, inter, m, top_k, d, 8, wgmma);
  RingMoePlan r2 = ring_moe_plan(true, hidden, inter, m, top_k, d, 8);
  if (!r13.ok || !r2.ok) return cudaErrorInvalidValue;
  set_w13_operands(r13.p, w13, num_experts, hidden, inter, x, topk_ids, topk_weights, h);
  set_w2_operands(r2.p, w2, num_experts, hidden, inter, h, topk_ids, y, true);
  r13.p.trace = trace13;
  r2.p.trace = trace2;
  *grid13 = r13.p.grid;
  *grid2 = r2.p.grid;
  using namespace moe_ring_detail;
  DSV4_GEMV_TRY(wgmma ? launch_ring_moe<moe_w13_wg_kernel>(r13, d, stream, true)
                      : launch_ring_moe<moe_w13_ring_kernel<8>>(r13, d, stream, true));
  return launch_ring_moe<moe_w2_ring_kernel<8>>(r2, d, stream, true);
}

// Each query returns the largest need of any m' <= m: a workspace sized for m serves every
// smaller m too (the counters' offsets never depend on m).
size_t sm90_fp4_moe_w13_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k) {
  DeviceInfo d;
  if (!shape_ok(1, hidden, inter, m, top_k) || device_info(&d) != cudaSuccess) return 0;
  size_t b = 0;
  for (int mm = 1; mm <= m; ++mm) b = std::max(b, w13_plan(hidden, inter, mm, top_k, d).ws_bytes);
  return b;
}
size_t sm90_fp4_moe_w2_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k) {
  DeviceInfo d;
  if (!shape_ok(1, hidden, inter, m, top_k) || device_info(&d) != cudaSuccess) return 0;
  size_t b = 0;
  for (int mm = 1; mm <= m; ++mm) b = std::max(b, w2_plan(hidden, inter, mm, top_k, d).ws_bytes);
  return b;
}
size_t sm90_fp4_moe_workspace_bytes(int64_t hidden, int64_t inter, int m, int top_k) {
  DeviceInfo d;
  if (!shape_ok(1, hidden, inter, m, top_k) || device_info(&d) != cudaSuccess) return 0;
  size_t b = 0;
  for (int mm = 1; mm <= m; ++mm) b = std::max(b, moe_ws(hidden, inter, mm, top_k, d).total);
  return b;
}

cudaError_t sm90_fp4_moe_w13(const uint8_t* w13, int num_experts, int64_t hidden, int64_t inter,
                             const uint16_t* x, int m, const int32_t* topk_ids,
                             const float* topk_weights, int top_k, uint8_t* hq, float* hs,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!w13 || !x || !topk_ids || !topk_weights || !hq || !hs || !workspace)
    return cudaErrorInvalidValue;
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(w13) || !aligned16(x) || !aligned16(workspace)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  const Plan pl = w13_plan(hidden, inter, m, top_k, d);
  if (pl.stages < 2 || workspace_bytes < pl.ws_bytes) return cudaErrorInvalidValue;
  auto* ws = static_cast<uint8_t*>(workspace);
  Params p{};
  p.w = w13;
  p.expert_stride = static_cast<int64_t>(fp4_w13_expert_bytes(inter, hidden));
  p.num_experts = num_experts;
  p.n = static_cast<int>(inter);
  p.k = static_cast<int>(hidden);
  p.nt = static_cast<int>(ceil_div(inter, 128));
  p.kt = static_cast<int>(fp4_w13_k_tiles(hidden));
  p.x = x;
  p.m = m;
  p.top_k = top_k;
  p.ids = topk_ids;
  p.topw = topk_weights;
  p.hq_out = hq;
  p.hs_out = hs;
  p.hq_stride = static_cast<int>(sm90_fp4_moe_hq_stride(inter));
  p.cnt1 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt1);
  p.cnt2 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt2);
  p.partials = reinterpret_cast<float*>(ws + pl.off_partials);
  switch (nh_for(m)) {
    case 1: return launch<kFp4W13, 1>(p, pl, d, stream);
    case 2: return launch<kFp4W13, 2>(p, pl, d, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t sm90_fp4_moe_w2(const uint8_t* w2, int num_experts, int64_t hidden, int64_t inter,
                            const uint8_t* hq, const float* hs, int m, const int32_t* topk_ids,
                            int top_k, uint16_t* y, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  if (!w2 || !hq || !hs || !topk_ids || !y || !workspace) return cudaErrorInvalidValue;
  if (!shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(w2) || !aligned16(hq) || !aligned16(workspace)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  const Plan pl = w2_plan(hidden, inter, m, top_k, d);
  if (pl.stages < 2 || workspace_bytes < pl.ws_bytes) return cudaErrorInvalidValue;
  auto* ws = static_cast<uint8_t*>(workspace);
  Params p{};
  p.w = w2;
  p.expert_stride = static_cast<int64_t>(fp4_w2_expert_bytes(hidden, inter));
  p.num_experts = num_experts;
  p.n = static_cast<int>(hidden);
  p.k = static_cast<int>(inter);
  p.nt = static_cast<int>(ceil_div(hidden, 128));
  p.kt = static_cast<int>(fp4_w2_k_tiles(inter));
  p.m = m;
  p.top_k = top_k;
  p.ids = topk_ids;
  p.hq_in = hq;
  p.hs_in = hs;
  p.hq_stride = static_cast<int>(sm90_fp4_moe_hq_stride(inter));
  p.hq_valid = static_cast<int>(ceil_div(inter, 128) * 128);
  p.y = y;
  p.cnt1 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt1);
  p.cnt2 = reinterpret_cast<uint32_t*>(ws + pl.off_cnt2);
  p.partials = reinterpret_cast<float*>(ws + pl.off_partials);
  p.ypair = reinterpret_cast<float*>(ws + pl.off_ypair);
  switch (nh_for(m)) {
    case 1: return launch<kFp4W2, 1>(p, pl, d, stream);
    case 2: return launch<kFp4W2, 2>(p, pl, d, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t sm90_fp4_moe_gemv(const uint8_t* w13, const uint8_t* w2, int num_experts,
                              int64_t hidden, int64_t inter, const uint16_t* x, int m,
                              const int32_t* topk_ids, const float* topk_weights, int top_k,
                              uint16_t* y, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  return sm90_fp4_moe_gemv_path(MoePath::kAuto, w13, w2, num_experts, hidden, inter, x, m, topk_ids,
                                topk_weights, top_k, y, workspace, workspace_bytes, stream);
}

cudaError_t sm90_fp4_moe_gemv_path(MoePath path, const uint8_t* w13, const uint8_t* w2,
                                   int num_experts, int64_t hidden, int64_t inter,
                                   const uint16_t* x, int m, const int32_t* topk_ids,
                                   const float* topk_weights, int top_k, uint16_t* y,
                                   void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!workspace || !shape_ok(num_experts, hidden, inter, m, top_k)) return cudaErrorInvalidValue;
  if (!aligned16(workspace)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  const MoeWs w = moe_ws(hidden, inter, m, top_k, d);
  if (workspace_bytes < w.total) return cudaErrorInvalidValue;
  auto* ws = static_cast<uint8_t*>(workspace);
  // kAuto: the wgmma pair wherever it applies (m <= 8), else the streaming pair. Measured
  // (docs/performance.md): fastest of the three pairs at m = 1 and 4 for top-4 and top-6.
  const bool w2_fits = ring_moe_plan(true, hidden, inter, m, top_k, d).ok;
  const bool ring_fits = w2_fits && ring_moe_plan(false, hidden, inter, m, top_k, d).ok;
  const bool wg_fits = w2_fits && ring_moe_plan(false, hidden, inter, m, top_k, d, 8, true).ok;
  if (path == MoePath::kAuto) path = wg_fits ? MoePath::kWgmma : MoePath::kStream;
  if (path == MoePath::kRing || path == MoePath::kWgmma) {
    if (!(path == MoePath::kRing ? ring_fits : wg_fits)) return cudaErrorInvalidValue;
    // h lives at the workspace start; w2 reads the ids before its PDL wait: the w1|w3 launch in
    // between ran its own wait on whatever produced them (and triggers only after it).
    auto* h = reinterpret_cast<uint16_t*>(ws + w.hq);
    DSV4_GEMV_TRY(path == MoePath::kWgmma
                      ? sm90_fp4_moe_w13_wgmma(w13, num_experts, hidden, inter, x, m, topk_ids, topk_weights,
                                               top_k, h, stream, true)
                      : sm90_fp4_moe_w13_ring(w13, num_experts, hidden, inter, x, m, topk_ids, topk_weights,
                                              top_k, h, stream, true));
    return sm90_fp4_moe_w2_ring(w2, num_experts, hidden, inter, h, m, topk_ids, top_k, y, stream, true,
                                true);
  }
  if (path != MoePath::kStream) return cudaErrorInvalidValue;
  auto* hq = ws + w.hq;
  auto* hs = reinterpret_cast<float*>(ws + w.hs);
  DSV4_GEMV_TRY(sm90_fp4_moe_w13(w13, num_experts, hidden, inter, x, m, topk_ids, topk_weights,
                                 top_k, hq, hs, ws + w.w13, w.w2 - w.w13, stream));
  return sm90_fp4_moe_w2(w2, num_experts, hidden, inter, hq, hs, m, topk_ids, top_k, y,
                         ws + w.w2, w.hq - w.w2, stream);
}

}  // namespace dsv4::cuda
