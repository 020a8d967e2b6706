// Decode GEMV benchmark (issue 7): the FP8 block-scaled and FP4 MoE kernels of dsv4/cuda/gemv.hpp
// on DeepSeek-V4-Flash shapes, M = 1..16, against cuBLASLt (FP8 with DeepSeek block scales where
// it accepts the shape) in the same run. Each number is the median of 7 CUDA-graph replays of R
// dependent launches (programmatic dependent launch on, as in a decode step); consecutive launches
// read different weight copies (>= 256 MB apart, 4x the 60 MB L2), so every launch streams its
// weights from HBM. A read-only probe kernel timed the same way gives the harness's ceiling.
// Prints a table; writes JSON to argv[1] if given. `--probe` runs a few plain launches for a
// profiler (ncu); DSV4_BENCH_QUICK=1 times a few rows at M = 1 (=2: M = 1 and 4); DSV4_BENCH_FP8=1 every FP8 shape at
// M = 1, 4, 16 (no MoE). FP8 rows also time each kernel forced (stream, direct, ring) and the
// launch-time choice without PDL; MoE rows the streaming pair and the 16-warp ring pair; for
// m <= 8 a line compares the ring and wgmma w1|w3 and the three pairs (both launches), and at M = 1
// a timing-only stage breakdown of the ring w2 kernel follows.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "dsv4/cuda/gemv.hpp"
#include "cuda/gemv_diag.hpp"
#include "dsv4/cuda/gemv_layout.hpp"

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, #x); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

namespace {
constexpr double kPeakTBs = 4.6;  // measured read-only HBM peak of our H200
constexpr size_t kRotateBytes = size_t{256} << 20;

__global__ void fill_random(uint8_t* p, size_t n, uint64_t seed, int mode) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    uint8_t b = static_cast<uint8_t>(h);
    if (mode == 0 && (b & 0x7f) == 0x7f) b ^= 1;  // e4m3 without NaN
    if (mode == 1) b = static_cast<uint8_t>(120 + (h & 7));  // e8m0 scales 2^-7..2^0
    // bf16 activations: high byte = sign | exponent 2^-4..2^3 (finite, varied)
    if (mode == 2 && (i & 1)) b = static_cast<uint8_t>((h & 0x80) | (0x3d + ((h >> 8) & 3)));
    p[i] = b;
  }
}
void fill(void* p, size_t n, int mode) {
  static uint64_t seed = 12345;
  fill_random<<<1024, 256>>>(static_cast<uint8_t*>(p), n, seed += 0x1234567, mode);
  CK(cudaGetLastError());
}

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t n) { CK(cudaMalloc(&p, std::max<size_t>(n, 256))); }
  ~Dev() { cudaFree(p); }
  template <class T> T* as(size_t off = 0) const { return reinterpret_cast<T*>(static_cast<uint8_t*>(p) + off); }
};

// Median over 7 replays of a graph of `reps` launches; microseconds per launch.
double time_graph(const std::function<void(int, cudaStream_t)>& enqueue, int reps, cudaStream_t st) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < reps; ++i) enqueue(i, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 2; ++i) CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int t = 0; t < 7; ++t) {
    CK(cudaEventRecord(a, st));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float v;
    CK(cudaEventElapsedTime(&v, a, b));
    ms.push_back(v);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return ms[3] * 1000.0 / reps;
}

// cuBLASLt baselines of y = x W^T (f32 compute, bf16 output), tried in this order:
//  kBlockFp8: FP8 e4m3 with DeepSeek-style block scales (x: 1x128 VEC128_32F as A, W: 128x128
//             BLK128x128_32F as B) -- the same numerics as our kernels;
//  kTensorFp8: FP8 e4m3 with per-tensor f32 scales (W as A);
//  kBf16: BF16 operands (twice the weight bytes).
// cuBLASLt refuses some of these at small m on Hopper; callers fall through to the next.
enum LtMode { kBlockFp8 = 0, kTensorFp8 = 1, kBf16 = 2 };
const char* lt_mode_name(LtMode md) { return md == kBlockFp8 ? "fp8b" : md == kTensorFp8 ? "fp8t" : "bf16"; }
struct LtGemm {
  cublasLtHandle_t h = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulHeuristicResult_t heur{};
  bool ok = false;
  LtMode mode;
  void* ws;
  size_t ws_bytes;
  // sa, sb: device f32 scale buffers large enough for the mode (all ones: timing only).
  LtGemm(cublasLtHandle_t handle, LtMode md, int64_t n, int64_t k, int m, const float* sa, const float* sb, void* w,
         size_t wb)
      : h(handle), mode(md), ws(w), ws_bytes(wb) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if (md != kBf16) {
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa));
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb));
    }
    if (md == kBlockFp8) {
      const int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
      if (cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof(am)) != CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof(bm)) != CUBLAS_STATUS_SUCCESS)
        return;
    }
    const cudaDataType_t t = md == kBf16 ? CUDA_R_16BF : CUDA_R_8F_E4M3;
    if (md == kBlockFp8) {  // D[m, n] = op(A)[m, k] op(B)[k, n]: A = x (k x m, transposed), B = W (k x n)
      cublasLtMatrixLayoutCreate(&la, t, k, m, k);
      cublasLtMatrixLayoutCreate(&lb, t, k, n, k);
      cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, m);
    } else {  // D[n, m] = op(A)[n, k] op(B)[k, m]: A = W (k x n, transposed), B = x (k x m)
      cublasLtMatrixLayoutCreate(&la, t, k, n, k);
      cublasLtMatrixLayoutCreate(&lb, t, k, m, k);
      cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, n, m, n);
    }
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes));
    int found = 0;
    ok = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &heur, &found) == CUBLAS_STATUS_SUCCESS && found > 0;
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~LtGemm() {
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  cublasStatus_t run(const void* w, const void* x, void* d, cudaStream_t st) const {
    const float one = 1.f, zero = 0.f;
    const void* a = mode == kBlockFp8 ? x : w;
    const void* b = mode == kBlockFp8 ? w : x;
    return cublasLtMatmul(h, op, &one, a, la, b, lb, &zero, d, ld, d, ld, &heur.algo, ws, ws_bytes, st);
  }
  // One uncaptured call: some shapes pass the heuristic and still fail at run time.
  bool usable(const void* w, const void* x, void* d, cudaStream_t st) {
    if (!ok) return false;
    const cublasStatus_t s = run(w, x, d, st);
    if (s != CUBLAS_STATUS_SUCCESS || cudaStreamSynchronize(st) != cudaSuccess) {
      std::fprintf(stderr, "cuBLASLt %s unavailable for this shape (status %d)\n", lt_mode_name(mode), int(s));
      cudaGetLastError();
      ok = false;
    }
    return ok;
  }
};
// What every benchmark needs from cuBLASLt: handle, workspace, and a device buffer of f32 ones for
// the scale pointers (timing only; kLtOnes covers the 128x128 and 1x128 scales of every shape).
constexpr size_t kLtOnes = size_t{1} << 16;
struct LtCtx {
  cublasLtHandle_t h;
  void* ws;
  size_t ws_bytes;
  const float* ones;
};

struct Row {
  std::string name, shape;
  int m;
  double mb, us, tbs, lt_us;
  std::string lt_kind;  // lt_mode_name() ("*" = ran at m = 16: refused at this m) or "" (none)
  // FP8 rows: each kernel forced (us = the launch-time choice, PDL on), and the choice without PDL.
  double us_stream = -1, us_direct = -1, us_ring = -1, us_nopdl = -1;
  // MoE rows: us = what sm90_fp4_moe_gemv runs; us_stream / us_ring = the streaming / ring kernels
  // (pairs on the "both" row), us_ring16 = the ring kernel with 16 warps per CTA.
  double us_ring16 = -1;
};
std::vector<Row> rows;

void print_row(const Row& r) {
  char lt[64] = "           n/a", sp[32] = "   n/a";
  if (r.lt_us > 0) {
    std::snprintf(lt, sizeof lt, "%5s %9.2f", r.lt_kind.c_str(), r.lt_us);
    std::snprintf(sp, sizeof sp, "%6.2fx", r.lt_us / r.us);
  }
  char paths[128] = "";
  if (r.us_direct < 0 && r.us_stream > 0)
    std::snprintf(paths, sizeof paths, " stream %7.2f | ring %7.2f | ring16 %7.2f |", r.us_stream, r.us_ring,
                  r.us_ring16);
  if (r.us_direct > 0)
    std::snprintf(paths, sizeof paths, " %7.2f | %7.2f | %7.2f | %7.2f |", r.us_stream, r.us_direct, r.us_ring,
                  r.us_nopdl);
  std::printf("| %-22s | %-12s | %2d | %7.2f | %8.2f | %5.2f | %5.1f%% | %s | %s |%s\n", r.name.c_str(), r.shape.c_str(),
              r.m, r.mb, r.us, r.tbs, 100.0 * r.tbs / kPeakTBs, lt, sp, paths);
  std::fflush(stdout);
}

// The best cuBLASLt baseline available for y[m, n] = x W^T, timed like our kernels (weights rotated
// over `copies` buffers of `per` bytes for FP8, a BF16 copy otherwise). Returns us, sets kind.
double time_cublaslt(const LtCtx& lc, int64_t n, int64_t k, int m, const Dev& w8, size_t per, int copies,
                     int reps, cudaStream_t st, std::string& kind);

void bench_fp8(const LtCtx& lc, const char* name, int64_t n, int64_t k, const std::vector<int>& ms) {
  namespace dc = dsv4::cuda;
  const size_t wb = dc::fp8_tiled_bytes(n, k), sb = size_t(dc::ceil_div(n, 128) * dc::ceil_div(k, 128));
  const size_t per = (wb + sb + 255) / 256 * 256;
  const int copies = static_cast<int>(std::min<size_t>(128, std::max<size_t>(2, (kRotateBytes + per - 1) / per)));
  Dev w(per * copies), x(16 * k * 2), y(16 * n * 2);
  fill(w.p, per * copies, 0);
  for (int c = 0; c < copies; ++c) fill(w.as<uint8_t>(per * c + wb), sb, 1);
  fill(x.p, 16 * k * 2, 2);
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const int reps = std::max(copies, 24);
  for (int m : ms) {
    const size_t wsb = dc::sm90_fp8_gemv_workspace_bytes(n, k, m);
    Dev ws(wsb);
    CK(cudaMemset(ws.p, 0, wsb));
    CK(dc::sm90_fp8_gemv(w.as<uint8_t>(), w.as<uint8_t>(wb), n, k, x.as<uint16_t>(), m, y.as<uint16_t>(), ws.p, wsb, st));
    CK(cudaStreamSynchronize(st));
    auto time_path = [&](dc::Fp8GemvPath path, bool pdl) {
      return time_graph(
          [&](int i, cudaStream_t s) {
            const int c = i % copies;
            CK(dc::sm90_fp8_gemv_path(path, w.as<uint8_t>(per * c), w.as<uint8_t>(per * c + wb), n, k,
                                      x.as<uint16_t>(), m, y.as<uint16_t>(), ws.p, wsb, s, pdl));
          },
          reps, st);
    };
    Row r{name, std::to_string(n) + "x" + std::to_string(k), m, 0, 0, 0, -1, ""};
    r.us = time_path(dc::Fp8GemvPath::kAuto, true);
    r.us_stream = time_path(dc::Fp8GemvPath::kStream, true);
    r.us_direct = time_path(dc::Fp8GemvPath::kDirect, true);
    r.us_ring = time_path(dc::Fp8GemvPath::kRing, true);
    r.us_nopdl = time_path(dc::Fp8GemvPath::kAuto, false);
    const double bytes = double(wb + sb) + double(m) * k * 2 + double(m) * n * 2;
    r.mb = bytes / 1e6;
    r.tbs = bytes / r.us / 1e6;
    r.lt_us = time_cublaslt(lc, n, k, m, w, per, copies, reps, st, r.lt_kind);
    print_row(r);
    rows.push_back(r);
  }
  CK(cudaStreamDestroy(st));
}

double time_cublaslt(const LtCtx& lc, int64_t n, int64_t k, int m, const Dev& w8, size_t per, int copies,
                     int reps, cudaStream_t st, std::string& kind) {
  Dev xq(16 * k), xb(16 * k * 2), y(16 * n * 2);
  fill(xq.p, 16 * k, 0);
  fill(xb.p, 16 * k * 2, 2);
  for (LtMode md : {kBlockFp8, kTensorFp8})
    for (int mm : {m, 16}) {
      if (mm < m) continue;
      LtGemm g(lc.h, md, n, k, mm, lc.ones, lc.ones, lc.ws, lc.ws_bytes);
      if (!g.usable(w8.p, xq.p, y.p, st)) continue;
      kind = std::string(lt_mode_name(md)) + (mm == m ? "" : "*");
      return time_graph([&](int i, cudaStream_t s) { g.run(w8.as<uint8_t>(per * (i % copies)), xq.p, y.p, s); },
                        reps, st);
    }
  const size_t bb = size_t(n) * k * 2;
  const int bc = static_cast<int>(std::min<size_t>(64, std::max<size_t>(2, (kRotateBytes + bb - 1) / bb)));
  Dev wb16(bb * bc);
  fill(wb16.p, bb * bc, 2);
  LtGemm g(lc.h, kBf16, n, k, m, nullptr, nullptr, lc.ws, lc.ws_bytes);
  if (!g.usable(wb16.p, xb.p, y.p, st)) return -1;
  kind = "bf16";
  return time_graph([&](int i, cudaStream_t s) { g.run(wb16.as<uint8_t>(bb * (i % bc)), xb.p, y.p, s); },
                    std::max(bc, 24), st);
}

// Ceiling of this harness: a kernel that only streams `bytes` (16-byte non-caching loads, 8 in
// flight per thread, 2 CTAs of 512 threads per SM), timed the same way, with and without PDL.
// early: trigger the next launch first (the most overlap PDL allows when all reads precede the wait).
__global__ void __launch_bounds__(512, 2) read_probe(const uint4* __restrict__ p, size_t n16, uint32_t* out,
                                                     int early) {
  if (early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  uint32_t acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (; i + 7 * stride < n16; i += 8 * stride) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v[j].x), "=r"(v[j].y), "=r"(v[j].z), "=r"(v[j].w)
                   : "l"(p + i + j * stride));
#pragma unroll
    for (int j = 0; j < 8; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  for (; i < n16; i += stride) acc ^= p[i].x;
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (!early) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (acc == 0x9e3779b9u) out[0] = acc;  // never true in practice; keeps the loads alive
}

void bench_probe() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  Dev out(256);
  std::printf(
      "read-only probe (ceiling of this harness): MB | us | TB/s | with PDL: us | TB/s | PDL, trigger first: us | "
      "TB/s\n");
  for (double mb : {4.2, 8.4, 16.8, 33.6, 50.3}) {
    const size_t bytes = size_t(mb * 1e6) / 256 * 256;
    const int copies = static_cast<int>(std::max<size_t>(2, (kRotateBytes + bytes - 1) / bytes));
    Dev buf(bytes * copies);
    fill(buf.p, bytes * copies, 3);
    double us[3];
    for (int pdl = 0; pdl < 3; ++pdl)
      us[pdl] = time_graph(
          [&](int i, cudaStream_t s) {
            cudaLaunchConfig_t cfg{};
            cfg.gridDim = dim3(2 * sms);
            cfg.blockDim = dim3(512);
            cfg.stream = s;
            cudaLaunchAttribute at{};
            at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
            at.val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = &at;
            cfg.numAttrs = pdl > 0 ? 1 : 0;
            CK(cudaLaunchKernelEx(&cfg, read_probe, buf.as<const uint4>(bytes * (i % copies)), bytes / 16,
                                  out.as<uint32_t>(), pdl == 2 ? 1 : 0));
          },
          std::max(copies, 24), st);
    std::printf("| probe | %6.1f | %7.2f | %5.2f | %7.2f | %5.2f | %7.2f | %5.2f |\n", bytes / 1e6, us[0],
                bytes / us[0] / 1e6, us[1], bytes / us[1] / 1e6, us[2], bytes / us[2] / 1e6);
  }
  CK(cudaStreamDestroy(st));
}

void bench_moe(const LtCtx& lc, int top_k, const std::vector<int>& ms) {
  namespace dc = dsv4::cuda;
  const int64_t H = 4096, I = 2048;
  const int E = 256;
  const size_t b13 = dc::fp4_w13_expert_bytes(I, H), b2 = dc::fp4_w2_expert_bytes(H, I);
  Dev w13(b13 * E), w2(b2 * E), x(16 * H * 2), y(16 * H * 2);
  fill(w13.p, b13 * E, 3);
  fill(w2.p, b2 * E, 3);
  // Scale bytes inside the tiles stay random: timing does not depend on values (no NaN paths).
  fill(x.p, 16 * H * 2, 2);
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const int reps = 24;
  std::mt19937 rng(7);
  for (int m : ms) {
    // reps different routings; each token picks top_k distinct experts at random.
    std::vector<int32_t> ids(size_t(reps) * m * top_k);
    std::vector<float> tw(ids.size(), 0.25f);
    double distinct = 0;
    for (int r = 0; r < reps; ++r) {
      std::vector<int> used;
      for (int t = 0; t < m; ++t) {
        std::vector<int> pick;
        while (int(pick.size()) < top_k) {
          const int e = int(rng() % E);
          if (std::find(pick.begin(), pick.end(), e) == pick.end()) pick.push_back(e);
        }
        for (int j = 0; j < top_k; ++j) {
          ids[(size_t(r) * m + t) * top_k + j] = pick[j];
          if (std::find(used.begin(), used.end(), pick[j]) == used.end()) used.push_back(pick[j]);
        }
      }
      distinct += double(used.size()) / reps;
    }
    Dev dids(ids.size() * 4), dtw(tw.size() * 4);
    CK(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dtw.p, tw.data(), tw.size() * 4, cudaMemcpyHostToDevice));
    const size_t ws_all = dc::sm90_fp4_moe_workspace_bytes(H, I, m, top_k);
    const size_t ws13 = dc::sm90_fp4_moe_w13_workspace_bytes(H, I, m, top_k);
    const size_t ws2 = dc::sm90_fp4_moe_w2_workspace_bytes(H, I, m, top_k);
    const int64_t hqs = dc::sm90_fp4_moe_hq_stride(I);
    Dev wa(ws_all), wa13(ws13), wa2(ws2), hq(size_t(m) * top_k * hqs), hs(size_t(m) * top_k * (hqs / 128) * 4);
    CK(cudaMemset(wa.p, 0, ws_all));
    CK(cudaMemset(wa13.p, 0, ws13));
    CK(cudaMemset(wa2.p, 0, ws2));
    auto idp = [&](int i) { return dids.as<int32_t>(size_t(i % reps) * m * top_k * 4); };
    auto twp = [&](int i) { return dtw.as<float>(size_t(i % reps) * m * top_k * 4); };
    CK(dc::sm90_fp4_moe_w13(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(0), twp(0), top_k, hq.as<uint8_t>(),
                            hs.as<float>(), wa13.p, ws13, st));
    CK(cudaStreamSynchronize(st));
    const double us13 = time_graph(
        [&](int i, cudaStream_t s) {
          CK(dc::sm90_fp4_moe_w13(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i), twp(i), top_k,
                                  hq.as<uint8_t>(), hs.as<float>(), wa13.p, ws13, s));
        },
        reps, st);
    const double us2 = time_graph(
        [&](int i, cudaStream_t s) {
          CK(dc::sm90_fp4_moe_w2(w2.as<uint8_t>(), E, H, I, hq.as<uint8_t>(), hs.as<float>(), m, idp(i), top_k,
                                 y.as<uint16_t>(), wa2.p, ws2, s));
        },
        reps, st);
    auto time_all = [&](dc::MoePath path) {
      return time_graph(
          [&](int i, cudaStream_t s) {
            CK(dc::sm90_fp4_moe_gemv_path(path, w13.as<uint8_t>(), w2.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m,
                                          idp(i), twp(i), top_k, y.as<uint16_t>(), wa.p, ws_all, s));
          },
          reps, st);
    };
    const double usall_stream = time_all(dc::MoePath::kStream);
    const double usall = time_all(dc::MoePath::kAuto);
    // The ring pair where it applies (m <= 8): stage 1 alone, stage 2 alone (ids read early: in
    // this chain no kernel writes them).
    // One bf16 h buffer [m*top_k, h_stride] (zeroed) for every ring-type stage timed below.
    const size_t hbytes = size_t(m) * top_k * dc::sm90_fp4_moe_h_stride(I) * 2;
    Dev hb(hbytes);
    CK(cudaMemset(hb.p, 0, hbytes));
    double r13 = -1, r2 = -1, r13_16 = -1, r2_16 = -1;
    if (dc::sm90_fp4_moe_ring_ok(H, I, m, top_k)) {
      for (int warps : {16, 8}) {
        if (!dc::sm90_fp4_moe_ring_ok(H, I, m, top_k, warps)) continue;
        (warps == 8 ? r13 : r13_16) = time_graph(
            [&](int i, cudaStream_t s) {
              CK(dc::sm90_fp4_moe_w13_ring(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i), twp(i), top_k,
                                           hb.as<uint16_t>(), s, true, warps));
            },
            reps, st);
        (warps == 8 ? r2 : r2_16) = time_graph(
            [&](int i, cudaStream_t s) {
              CK(dc::sm90_fp4_moe_w2_ring(w2.as<uint8_t>(), E, H, I, hb.as<uint16_t>(), m, idp(i), top_k,
                                          y.as<uint16_t>(), s, true, true, warps));
            },
            reps, st);
      }
    }
    const double by13 = distinct * b13 + m * H * 2.0, by2 = distinct * b2 + m * top_k * hqs * 1.0 + m * H * 2.0;
    // cuBLASLt baseline at m = 1: top_k FP8 GEMVs of w1|w3 [4096, 4096] and of w2 [4096, 2048]
    // (FP8 weights: twice the FP4 bytes; Hopper has no FP4 GEMM), rotated over 12 expert copies.
    double lt13 = -1, lt2 = -1;
    std::string ltk;
    if (m == 1) {
      // cuBLASLt at m = 1: top_k GEMVs of w1|w3 [2I, H] and of w2 [H, I] per launch, FP8 (twice the
      // FP4 bytes; Hopper has no FP4 GEMM) or BF16, weights rotated over `slots` expert copies.
      Dev xq(16 * H * 2), hq8(16 * I * 2), yo(16 * 2 * I * 2);
      fill(xq.p, 16 * H * 2, 2);
      fill(hq8.p, 16 * I * 2, 2);
      bool done = false;
      for (LtMode md : {kBlockFp8, kTensorFp8, kBf16}) {
        for (int mm : {1, 16}) {
          const int eb = md == kBf16 ? 2 : 1, slots = md == kBf16 ? 8 : 12;
          const size_t f13 = size_t(2 * I) * H * eb, f2 = size_t(H) * I * eb;
          LtGemm g13(lc.h, md, 2 * I, H, mm, lc.ones, lc.ones, lc.ws, lc.ws_bytes);
          LtGemm g2(lc.h, md, H, I, mm, lc.ones, lc.ones, lc.ws, lc.ws_bytes);
          Dev l13(f13 * slots), l2(f2 * slots);
          fill(l13.p, f13 * slots, md == kBf16 ? 2 : 0);
          fill(l2.p, f2 * slots, md == kBf16 ? 2 : 0);
          if (!g13.usable(l13.p, xq.p, yo.p, st) || !g2.usable(l2.p, hq8.p, yo.p, st)) continue;
          lt13 = time_graph(
              [&](int i, cudaStream_t s) {
                for (int j = 0; j < top_k; ++j) g13.run(l13.as<uint8_t>(f13 * ((i * top_k + j) % slots)), xq.p, yo.p, s);
              },
              reps, st);
          lt2 = time_graph(
              [&](int i, cudaStream_t s) {
                for (int j = 0; j < top_k; ++j) g2.run(l2.as<uint8_t>(f2 * ((i * top_k + j) % slots)), hq8.p, yo.p, s);
              },
              reps, st);
          ltk = std::string(lt_mode_name(md)) + (mm == 1 ? "" : "*");
          done = true;
          break;
        }
        if (done) break;
      }
    }
    const std::string tag = "routed x" + std::to_string(top_k);
    double wg13 = -1, pair_ring = -1, pair_wg = -1;
    if (r13 > 0) {
      wg13 = time_graph(
          [&](int i, cudaStream_t s) {
            CK(dc::sm90_fp4_moe_w13_wgmma(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i), twp(i), top_k,
                                          hb.as<uint16_t>(), s));
          },
          reps, st);
      pair_ring = time_all(dc::MoePath::kRing);
      pair_wg = time_all(dc::MoePath::kWgmma);
      std::printf("routed x%d m=%d w1|w3: ring %.2f us | wgmma %.2f us; both launches: stream %.2f | ring %.2f | "
                  "wgmma %.2f us\n",
                  top_k, m, r13, wg13, usall_stream, pair_ring, pair_wg);
    }
    if (m == 1 && r2 > 0) {
      // Pair interactions (diagnostic): w1|w3 (ring or wgmma) then w2 ring, with PDL / ids_early off
      // on one side, or w2 at 16 warps.
      for (int wg = 0; wg < 2; ++wg) {
        std::printf("pair x%d m=1 %s w1|w3 + ring w2, us:", top_k, wg ? "wgmma" : "ring");
        struct V { const char* name; bool pdl13, pdl2, early; int w2warps; };
        for (const V v : {V{"pdl+early", true, true, true, 8}, V{"w2 late ids", true, true, false, 8},
                          V{"w13 no pdl", false, true, true, 8}, V{"w2 no pdl", true, false, false, 8},
                          V{"w2 16 warps", true, true, true, 16}})
          std::printf(" %s %.2f |", v.name,
                      time_graph(
                          [&](int i, cudaStream_t s) {
                            if (wg)
                              CK(dc::sm90_fp4_moe_w13_wgmma(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i),
                                                            twp(i), top_k, hb.as<uint16_t>(), s, v.pdl13));
                            else
                              CK(dc::sm90_fp4_moe_w13_ring(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i),
                                                           twp(i), top_k, hb.as<uint16_t>(), s, v.pdl13));
                            CK(dc::sm90_fp4_moe_w2_ring(w2.as<uint8_t>(), E, H, I, hb.as<uint16_t>(), m, idp(i),
                                                        top_k, y.as<uint16_t>(), s, v.pdl2, v.early, v.w2warps));
                          },
                          reps, st));
        std::printf("\n");
      }
    }
    if (r2 > 0) {
      // Placement study (diagnostic): a graph of `pairs` traced pairs, replayed once after a warm-up;
      // per launch, SMs holding two of its CTAs and how long CTAs there ran against the others.
      const int pairs = 16, gmax = 1024;
      Dev tr(size_t(pairs) * 2 * 3 * gmax * 4);
      for (int wg = 0; wg < 2; ++wg) {
        int g13 = 0, g2 = 0;
        auto enqueue = [&](cudaStream_t s) {
          for (int i = 0; i < pairs; ++i)
            CK(dc::sm90_fp4_moe_pair_traced(wg == 1, w13.as<uint8_t>(), w2.as<uint8_t>(), E, H, I, x.as<uint16_t>(),
                                            m, idp(i), twp(i), top_k, hb.as<uint16_t>(), y.as<uint16_t>(), s,
                                            tr.as<uint32_t>(size_t(2 * i) * 3 * gmax * 4),
                                            tr.as<uint32_t>(size_t(2 * i + 1) * 3 * gmax * 4), &g13, &g2));
        };
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        enqueue(st);
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        for (int it = 0; it < 3; ++it) CK(cudaGraphLaunch(ge, st));
        CK(cudaStreamSynchronize(st));
        std::vector<uint32_t> t(size_t(pairs) * 2 * 3 * gmax);
        CK(cudaMemcpy(t.data(), tr.p, t.size() * 4, cudaMemcpyDeviceToHost));
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
        for (int st2 = 0; st2 < 2; ++st2) {
          const int grid = st2 ? g2 : g13;
          double dbl_sms = 0, dur_dbl = 0, dur_one = 0, span = 0, end_dbl = 0, end_one = 0;
          int n_dbl = 0, n_one = 0, launches = 0;
          for (int i = 2; i < pairs; ++i) {
            const uint32_t* o = t.data() + size_t(2 * i + st2) * 3 * gmax;
            std::vector<int> per(1024, 0);
            uint32_t t0 = o[1], t1 = o[2], e0 = o[2];
            for (int b = 0; b < grid; ++b) {
              ++per[o[3 * b] & 1023];
              t0 = std::min(t0, o[3 * b + 1]);
              t1 = std::max(t1, o[3 * b + 2]);
              e0 = std::min(e0, o[3 * b + 2]);
            }
            for (int b = 0; b < grid; ++b) {
              const double dur = (o[3 * b + 2] - o[3 * b + 1]) * 1e-3, end = (o[3 * b + 2] - e0) * 1e-3;
              if (per[o[3 * b] & 1023] > 1) {
                dur_dbl += dur;
                end_dbl += end;
                ++n_dbl;
              } else {
                dur_one += dur;
                end_one += end;
                ++n_one;
              }
            }
            for (int c : per) dbl_sms += c > 1;
            span += (t1 - t0) * 1e-3;
            ++launches;
          }
          std::printf("placement x%d m=%d %s pair, %s (grid %d): SMs with 2 CTAs %.1f per launch | CTA us there %.2f "
                      "vs %.2f, end after the first end %.2f vs %.2f | launch span %.2f us\n",
                      top_k, m, wg ? "wgmma" : "ring", st2 ? "w2" : "w1|w3", grid, dbl_sms / launches,
                      n_dbl ? dur_dbl / n_dbl : 0.0, n_one ? dur_one / n_one : 0.0, n_dbl ? end_dbl / n_dbl : 0.0,
                      n_one ? end_one / n_one : 0.0, span / launches);
        }
      }
    }
    if (m == 1 && r2 > 0) {
      // Stage breakdown of the ring w2 kernel (timing-only variants, garbage outputs).
      std::printf("ring w2 x%d m=1 stage breakdown, us: full %.2f", top_k, r2);
      for (int v : {1, 2, 3})
        std::printf(" | %s %.2f", v == 1 ? "no decode" : v == 2 ? "no mma" : "neither",
                    time_graph(
                        [&](int i, cudaStream_t s) {
                          CK(dc::sm90_fp4_moe_w2_ring_variant(v, w2.as<uint8_t>(), E, H, I, hb.as<uint16_t>(), m,
                                                              idp(i), top_k, y.as<uint16_t>(), s, true, true, 8));
                        },
                        reps, st));
      std::printf("\n");
    }
    // Main columns: what sm90_fp4_moe_gemv runs (stage 1: wgmma where the ring-type pair applies).
    const double u13 = wg13 > 0 ? wg13 : us13, u2 = r2 > 0 ? r2 : us2;
    Row r13r{tag + " w1|w3", "4096x4096", m, by13 / 1e6, u13, by13 / u13 / 1e6, lt13, ltk};
    Row r2r{tag + " w2", "4096x2048", m, by2 / 1e6, u2, by2 / u2 / 1e6, lt2, ltk};
    Row ra{tag + " both", "(2 launches)", m, (by13 + by2) / 1e6, usall, (by13 + by2) / usall / 1e6,
           (lt13 > 0 && lt2 > 0) ? lt13 + lt2 : -1, ltk};
    r13r.us_stream = us13;
    r2r.us_stream = us2;
    r13r.us_ring = r13;
    r2r.us_ring = r2;
    ra.us_ring = pair_ring;
    r13r.us_ring16 = r13_16;
    r2r.us_ring16 = r2_16;
    ra.us_stream = usall_stream;
    for (const Row* p : {&r13r, &r2r, &ra}) {
      print_row(*p);
      rows.push_back(*p);
    }
  }
  CK(cudaStreamDestroy(st));
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB; effective TB/s = bytes that must be read / time; peak %.1f TB/s\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, kPeakTBs);
  if (argc > 1 && std::string(argv[1]) == "--probe") {
    // A few plain launches (no graph, no cuBLASLt) for a profiler: wq_b and wo_b at m = 1 through
    // each FP8 kernel, then the MoE stages (top-4, m = 1).
    namespace dc = dsv4::cuda;
    for (auto [n, k] : {std::pair<int64_t, int64_t>{32768, 1024}, {4096, 8192}}) {
      const size_t wb = dc::fp8_tiled_bytes(n, k), sb = size_t(dc::ceil_div(n, 128) * dc::ceil_div(k, 128));
      Dev w(wb + sb), x(k * 2), y(n * 2);
      fill(w.p, wb, 0);
      fill(w.as<uint8_t>(wb), sb, 1);
      fill(x.p, k * 2, 2);
      const size_t wsb = dc::sm90_fp8_gemv_workspace_bytes(n, k, 1);
      Dev ws(wsb);
      CK(cudaMemset(ws.p, 0, wsb));
      for (auto path : {dc::Fp8GemvPath::kDirect, dc::Fp8GemvPath::kRing, dc::Fp8GemvPath::kStream})
        for (int i = 0; i < 2; ++i)
          CK(dc::sm90_fp8_gemv_path(path, w.as<uint8_t>(), w.as<uint8_t>(wb), n, k, x.as<uint16_t>(), 1,
                                    y.as<uint16_t>(), ws.p, wsb, nullptr));
      CK(cudaDeviceSynchronize());
    }
    {
      const int64_t H = 4096, I = 2048;
      const int E = 256, K = 4;
      const size_t b13 = dc::fp4_w13_expert_bytes(I, H), b2 = dc::fp4_w2_expert_bytes(H, I);
      Dev w13(b13 * E), w2(b2 * E), x(H * 2), y(H * 2), ids(64), tw(64);
      fill(w13.p, b13 * E, 3);
      fill(w2.p, b2 * E, 3);
      fill(x.p, H * 2, 2);
      const int32_t hid[4] = {3, 77, 141, 250};
      const float htw[4] = {0.25f, 0.25f, 0.25f, 0.25f};
      CK(cudaMemcpy(ids.p, hid, 16, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(tw.p, htw, 16, cudaMemcpyHostToDevice));
      const size_t wsb = dc::sm90_fp4_moe_workspace_bytes(H, I, 1, K);
      Dev ws(wsb);
      CK(cudaMemset(ws.p, 0, wsb));
      Dev hb(K * dc::sm90_fp4_moe_h_stride(I) * 2);
      for (int warps : {8, 16}) {
        CK(dc::sm90_fp4_moe_w13_ring(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), 1, ids.as<int32_t>(),
                                     tw.as<float>(), K, hb.as<uint16_t>(), nullptr, true, warps));
        CK(dc::sm90_fp4_moe_w2_ring(w2.as<uint8_t>(), E, H, I, hb.as<uint16_t>(), 1, ids.as<int32_t>(), K,
                                    y.as<uint16_t>(), nullptr, true, false, warps));
      }
      CK(dc::sm90_fp4_moe_w13_wgmma(w13.as<uint8_t>(), E, H, I, x.as<uint16_t>(), 1, ids.as<int32_t>(),
                                    tw.as<float>(), K, hb.as<uint16_t>(), nullptr, true));
      CK(dc::sm90_fp4_moe_gemv_path(dc::MoePath::kStream, w13.as<uint8_t>(), w2.as<uint8_t>(), E, H, I,
                                    x.as<uint16_t>(), 1, ids.as<int32_t>(), tw.as<float>(), K, y.as<uint16_t>(),
                                    ws.p, wsb, nullptr));
      CK(cudaDeviceSynchronize());
    }
    return 0;
  }
  cublasLtHandle_t lt;
  if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) return 1;
  const size_t ltws_bytes = size_t{32} << 20;
  Dev ltws(ltws_bytes), ones(kLtOnes * 4);
  {
    std::vector<float> h(kLtOnes, 1.f);
    CK(cudaMemcpy(ones.p, h.data(), kLtOnes * 4, cudaMemcpyHostToDevice));
  }
  const LtCtx lc{lt, ltws.p, ltws_bytes, ones.as<float>()};
  bench_probe();
  std::printf("| %-22s | %-12s | %2s | %7s | %8s | %5s | %6s | %14s | %7s |\n", "matrix (group)", "N x K", "M", "MB",
              "us", "TB/s", "%peak", "cuBLASLt us", "speedup");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|  (FP8 rows add, us: stream | direct | "
              "ring | auto without PDL)\n");
  // DSV4_BENCH_FP8=1: every FP8 shape at M = 1, 4, 16, no MoE rows.
  const bool fp8_only = std::getenv("DSV4_BENCH_FP8") != nullptr;
  const char* quick = std::getenv("DSV4_BENCH_QUICK");
  const std::vector<int> ms = quick ? (quick[0] == '2' ? std::vector<int>{1, 4} : std::vector<int>{1})
                              : fp8_only                      ? std::vector<int>{1, 4, 16}
                                                              : std::vector<int>{1, 2, 4, 8, 16};
  if (std::getenv("DSV4_BENCH_QUICK")) {
    bench_fp8(lc, "wq_b", 32768, 1024, ms);
    bench_fp8(lc, "wkv", 512, 4096, ms);
    bench_fp8(lc, "wo_b", 4096, 8192, ms);
    bench_fp8(lc, "wq_b|idx wq_b (group)", 40960, 1024, ms);
    bench_fp8(lc, "shared w1|w3 (group)", 4096, 4096, ms);
    bench_moe(lc, 4, ms);
    bench_moe(lc, 6, ms);
    return 0;
  }
  struct S { const char* name; int64_t n, k; };
  const S shapes[] = {{"wq_a", 1024, 4096},          {"wkv", 512, 4096},          {"wq_a|wkv (group)", 1536, 4096},
                      {"wq_b", 32768, 1024},         {"indexer wq_b", 8192, 1024}, {"wq_b|idx wq_b (group)", 40960, 1024},
                      {"wo_b", 4096, 8192},          {"shared w1", 2048, 4096},   {"shared w1|w3 (group)", 4096, 4096},
                      {"shared w2", 4096, 2048}};
  for (const S& s : shapes) bench_fp8(lc, s.name, s.n, s.k, ms);
  if (!fp8_only) {
    bench_moe(lc, 4, ms);
    bench_moe(lc, 6, {1, 4, 16});
  }
  cublasLtDestroy(lt);
  if (argc > 1) {
    FILE* f = std::fopen(argv[1], "w");
    if (f) {
      std::fprintf(f, "{\"device\": \"%s\", \"peak_tbs\": %.2f, \"rows\": [\n", prop.name, kPeakTBs);
      for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        std::fprintf(f, "  {\"name\": \"%s\", \"shape\": \"%s\", \"m\": %d, \"mb\": %.4f, \"us\": %.3f, \"tbs\": %.4f, "
                        "\"pct_peak\": %.2f, \"cublaslt_us\": %.3f, \"cublaslt_type\": \"%s\", \"stream_us\": %.3f, "
                        "\"direct_us\": %.3f, \"ring_us\": %.3f, \"auto_nopdl_us\": %.3f, \"moe_ring16_us\": %.3f}%s\n",
                     r.name.c_str(), r.shape.c_str(), r.m, r.mb, r.us, r.tbs, 100 * r.tbs / kPeakTBs, r.lt_us,
                     r.lt_kind.c_str(), r.us_stream, r.us_direct, r.us_ring, r.us_nopdl, r.us_ring16,
                     i + 1 < rows.size() ? "," : "");
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  return 0;
}
