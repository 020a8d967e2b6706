// FP8 block-scaled decode GEMV (spec §5.4) for M = 1..16 tokens on sm_90a: argument checks,
// planning and launch of gemv_kernel<kFp8, NH> (sm90_fp8_gemv_common.cuh). The activation
// quantisation of spec §5.1 runs inside the kernel, per CTA, on the k-range that CTA reads.
#include <algorithm>
#include <cstdint>

#include "dsv4/cuda/gemv.hpp"
#include "sm90_fp8_gemv_common.cuh"

namespace dsv4::cuda {
using namespace gemv_detail;

namespace {
Plan fp8_plan(int64_t n, int64_t k, int m, const DeviceInfo& d) {
  return make_plan(kFp8, m <= 8 ? 1 : 2, m, 1, ceil_div(n, 128), ceil_div(k, 128), kFp8TileBytes,
                   d.sms, d.smem_optin, d.smem_per_sm);
}
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
}  // namespace

size_t sm90_fp8_gemv_workspace_bytes(int64_t n, int64_t k, int m) {
  DeviceInfo d;
  if (n < 1 || k < 1 || m < 1 || m > kGemvMaxTokens || device_info(&d) != cudaSuccess) return 0;
  return fp8_plan(n, k, m, d).ws_bytes;
}

cudaError_t sm90_fp8_gemv(const uint8_t* w_tiled, const uint8_t* w_scale, int64_t n, int64_t k,
                          const uint16_t* x, int m, uint16_t* y, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream) {
  if (!w_tiled || !w_scale || !x || !y || !workspace) return cudaErrorInvalidValue;
  if (n < 1 || k < 8 || k % 8 != 0 || m < 1 || m > kGemvMaxTokens) return cudaErrorInvalidValue;
  if (n > (int64_t{1} << 30) || k > (int64_t{1} << 24)) return cudaErrorInvalidValue;
  if (!aligned16(w_tiled) || !aligned16(x) || !aligned16(workspace)) return cudaErrorInvalidValue;
  DeviceInfo d;
  DSV4_GEMV_TRY(device_info(&d));
  const Plan pl = fp8_plan(n, k, m, d);
  if (pl.stages < 2 || workspace_bytes < pl.ws_bytes) return cudaErrorInvalidValue;
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
    case 1: return launch<kFp8, 1>(p, plc, d, stream);
    case 2: return launch<kFp8, 2>(p, plc, d, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace dsv4::cuda
