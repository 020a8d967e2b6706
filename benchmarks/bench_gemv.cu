// Decode GEMV benchmark (issue 7): the FP8 block-scaled and FP4 MoE kernels of dsv4/cuda/gemv.hpp
// on DeepSeek-V4-Flash shapes, M = 1..16, against cuBLASLt FP8 in the same run. Each number is the
// median of 7 CUDA-graph replays of R launches; consecutive launches read different weight copies
// (>= 256 MB apart, 4x the 60 MB L2), so every launch streams its weights from HBM (an L2 flush
// between runs, without timing the flush). Prints a table; writes JSON to argv[1] if given.
// `--probe` runs a few plain launches for a profiler (ncu); DSV4_BENCH_QUICK=1 times a few rows;
// DSV4_BENCH_FP8=1 times every FP8 shape at M = 1, 4, 16 (no MoE). FP8 rows also time each kernel
// forced (Fp8GemvPath::kStream, kDirect); the main column is the launch-time choice.
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

// cuBLASLt y^T[N, M] = W[N,K] x^T with f32 compute and bf16 output: FP8 e4m3 operands with
// per-tensor f32 scales when cuBLASLt accepts the shape, else BF16 operands (twice the bytes).
struct LtGemm {
  cublasLtHandle_t h = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulHeuristicResult_t heur{};
  bool ok = false;
  void* ws;
  size_t ws_bytes;
  LtGemm(cublasLtHandle_t handle, bool fp8, int64_t n, int64_t k, int m, const float* sa, const float* sb, void* w,
         size_t wb)
      : h(handle), ws(w), ws_bytes(wb) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if (fp8) {
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa));
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb));
    }
    const cudaDataType_t t = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    cublasLtMatrixLayoutCreate(&la, t, k, n, k);
    cublasLtMatrixLayoutCreate(&lb, t, k, m, k);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, n, m, n);
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
  cublasStatus_t run(const void* a, const void* b, void* d, cudaStream_t st) const {
    const float one = 1.f, zero = 0.f;
    return cublasLtMatmul(h, op, &one, a, la, b, lb, &zero, d, ld, d, ld, &heur.algo, ws, ws_bytes, st);
  }
  // One uncaptured call: some shapes pass the heuristic and still fail at run time.
  bool usable(const void* a, const void* b, void* d, cudaStream_t st) {
    if (!ok) return false;
    const cublasStatus_t s = run(a, b, d, st);
    if (s != CUBLAS_STATUS_SUCCESS || cudaStreamSynchronize(st) != cudaSuccess) {
      std::fprintf(stderr, "cuBLASLt unavailable for this shape/type (status %d)\n", int(s));
      cudaGetLastError();
      ok = false;
    }
    return ok;
  }
};

struct Row {
  std::string name, shape;
  int m;
  double mb, us, tbs, lt_us;
  std::string lt_kind;  // "fp8", "bf16" or "" (none)
  double us_stream = -1, us_direct = -1;  // FP8: each kernel forced (us = the launch-time choice)
};
std::vector<Row> rows;

void print_row(const Row& r) {
  char lt[64] = "           n/a", sp[32] = "   n/a";
  if (r.lt_us > 0) {
    std::snprintf(lt, sizeof lt, "%4s %9.2f", r.lt_kind.c_str(), r.lt_us);
    std::snprintf(sp, sizeof sp, "%6.2fx", r.lt_us / r.us);
  }
  char paths[48] = "";
  if (r.us_stream > 0) std::snprintf(paths, sizeof paths, " %8.2f | %8.2f |", r.us_stream, r.us_direct);
  std::printf("| %-22s | %-12s | %2d | %7.2f | %8.2f | %5.2f | %5.1f%% | %s | %s |%s\n", r.name.c_str(), r.shape.c_str(),
              r.m, r.mb, r.us, r.tbs, 100.0 * r.tbs / kPeakTBs, lt, sp, paths);
  std::fflush(stdout);
}

void bench_fp8(cublasLtHandle_t lt, void* ltws, size_t ltws_bytes, const char* name, int64_t n, int64_t k,
               const std::vector<int>& ms) {
  namespace dc = dsv4::cuda;
  const size_t wb = dc::fp8_tiled_bytes(n, k), sb = size_t(dc::ceil_div(n, 128) * dc::ceil_div(k, 128));
  const size_t per = (wb + sb + 255) / 256 * 256;
  const int copies = static_cast<int>(std::min<size_t>(128, std::max<size_t>(2, (kRotateBytes + per - 1) / per)));
  Dev w(per * copies), x(16 * k * 2), xq(16 * k), y(16 * n * 2), sc(8);
  fill(w.p, per * copies, 0);
  for (int c = 0; c < copies; ++c) fill(w.as<uint8_t>(per * c + wb), sb, 1);
  fill(x.p, 16 * k * 2, 2);
  fill(xq.p, 16 * k, 0);
  const float ones[2] = {1.f, 1.f};
  CK(cudaMemcpy(sc.p, ones, 8, cudaMemcpyHostToDevice));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const int reps = std::max(copies, 24);
  for (int m : ms) {
    const size_t wsb = dc::sm90_fp8_gemv_workspace_bytes(n, k, m);
    Dev ws(wsb);
    CK(cudaMemset(ws.p, 0, wsb));
    CK(dc::sm90_fp8_gemv(w.as<uint8_t>(), w.as<uint8_t>(wb), n, k, x.as<uint16_t>(), m, y.as<uint16_t>(), ws.p, wsb, st));
    CK(cudaStreamSynchronize(st));
    double path_us[3];
    for (auto path : {dc::Fp8GemvPath::kAuto, dc::Fp8GemvPath::kStream, dc::Fp8GemvPath::kDirect})
      path_us[int(path)] = time_graph(
          [&](int i, cudaStream_t s) {
            const int c = i % copies;
            CK(dc::sm90_fp8_gemv_path(path, w.as<uint8_t>(per * c), w.as<uint8_t>(per * c + wb), n, k,
                                      x.as<uint16_t>(), m, y.as<uint16_t>(), ws.p, wsb, s));
          },
          reps, st);
    const double us = path_us[0];
    const double bytes = double(wb + sb) + double(m) * k * 2 + double(m) * n * 2;
    double lt_us = -1;
    // cuBLASLt FP8 at n = m (then n = 16); if FP8 is refused, BF16 weights rotated the same way.
    std::string lt_kind;
    for (int mm : {m, 16}) {
      LtGemm g(lt, true, n, k, mm, sc.as<float>(), sc.as<float>(4), ltws, ltws_bytes);
      if (g.usable(w.p, xq.p, y.p, st)) {
        lt_us = time_graph([&](int i, cudaStream_t s) { g.run(w.as<uint8_t>(per * (i % copies)), xq.p, y.p, s); }, reps, st);
        lt_kind = mm == m ? "fp8" : "fp8*";
        break;
      }
    }
    if (lt_us < 0) {
      const size_t bb = size_t(n) * k * 2;
      const int bc = static_cast<int>(std::min<size_t>(64, std::max<size_t>(2, (kRotateBytes + bb - 1) / bb)));
      Dev wb16(bb * bc), xb(16 * k * 2);
      fill(wb16.p, bb * bc, 2);
      fill(xb.p, 16 * k * 2, 2);
      LtGemm g(lt, false, n, k, m, nullptr, nullptr, ltws, ltws_bytes);
      if (g.usable(wb16.p, xb.p, y.p, st)) {
        lt_us = time_graph([&](int i, cudaStream_t s) { g.run(wb16.as<uint8_t>(bb * (i % bc)), xb.p, y.p, s); },
                           std::max(bc, 24), st);
        lt_kind = "bf16";
      }
    }
    Row r{name, std::to_string(n) + "x" + std::to_string(k), m, bytes / 1e6, us, bytes / us / 1e6, lt_us, lt_kind,
          path_us[1], path_us[2]};
    print_row(r);
    rows.push_back(r);
  }
  CK(cudaStreamDestroy(st));
}

void bench_moe(cublasLtHandle_t lt, void* ltws, size_t ltws_bytes, int top_k, const std::vector<int>& ms) {
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
    const double usall = time_graph(
        [&](int i, cudaStream_t s) {
          CK(dc::sm90_fp4_moe_gemv(w13.as<uint8_t>(), w2.as<uint8_t>(), E, H, I, x.as<uint16_t>(), m, idp(i), twp(i),
                                   top_k, y.as<uint16_t>(), wa.p, ws_all, s));
        },
        reps, st);
    const double by13 = distinct * b13 + m * H * 2.0, by2 = distinct * b2 + m * top_k * hqs * 1.0 + m * H * 2.0;
    // cuBLASLt baseline at m = 1: top_k FP8 GEMVs of w1|w3 [4096, 4096] and of w2 [4096, 2048]
    // (FP8 weights: twice the FP4 bytes; Hopper has no FP4 GEMM), rotated over 12 expert copies.
    double lt13 = -1, lt2 = -1;
    std::string ltk;
    if (m == 1) {
      Dev xq(H * 2), hq8(I * 2), sc(8), yo(2 * I * 2);
      fill(xq.p, H * 2, 2);
      fill(hq8.p, I * 2, 2);
      const float ones[2] = {1.f, 1.f};
      CK(cudaMemcpy(sc.p, ones, 8, cudaMemcpyHostToDevice));
      for (bool fp8 : {true, false}) {
        const int eb = fp8 ? 1 : 2, slots = fp8 ? 12 : 8;
        const size_t f13 = size_t(2 * I) * H * eb, f2 = size_t(H) * I * eb;
        Dev l13(f13 * slots), l2(f2 * slots);
        fill(l13.p, f13 * slots, fp8 ? 0 : 2);
        fill(l2.p, f2 * slots, fp8 ? 0 : 2);
        LtGemm g13(lt, fp8, 2 * I, H, 1, sc.as<float>(), sc.as<float>(4), ltws, ltws_bytes);
        LtGemm g2(lt, fp8, H, I, 1, sc.as<float>(), sc.as<float>(4), ltws, ltws_bytes);
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
        ltk = fp8 ? "fp8" : "bf16";
        break;
      }
    }
    const std::string tag = "routed x" + std::to_string(top_k);
    Row r13{tag + " w1|w3", "4096x4096", m, by13 / 1e6, us13, by13 / us13 / 1e6, lt13, ltk};
    Row r2{tag + " w2", "4096x2048", m, by2 / 1e6, us2, by2 / us2 / 1e6, lt2, ltk};
    Row ra{tag + " both", "(2 launches)", m, (by13 + by2) / 1e6, usall, (by13 + by2) / usall / 1e6,
           (lt13 > 0 && lt2 > 0) ? lt13 + lt2 : -1, ltk};
    for (const Row* p : {&r13, &r2, &ra}) {
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
    // A few plain launches (no graph, no cuBLASLt) for a profiler: wq_b, wkv at m = 1.
    namespace dc = dsv4::cuda;
    for (auto [n, k] : {std::pair<int64_t, int64_t>{32768, 1024}, {512, 4096}}) {
      const size_t wb = dc::fp8_tiled_bytes(n, k), sb = size_t(dc::ceil_div(n, 128) * dc::ceil_div(k, 128));
      Dev w(wb + sb), x(k * 2), y(n * 2);
      fill(w.p, wb, 0);
      fill(w.as<uint8_t>(wb), sb, 1);
      fill(x.p, k * 2, 2);
      const size_t wsb = dc::sm90_fp8_gemv_workspace_bytes(n, k, 1);
      Dev ws(wsb);
      CK(cudaMemset(ws.p, 0, wsb));
      for (int i = 0; i < 3; ++i)
        CK(dc::sm90_fp8_gemv(w.as<uint8_t>(), w.as<uint8_t>(wb), n, k, x.as<uint16_t>(), 1, y.as<uint16_t>(), ws.p, wsb, nullptr));
      CK(cudaDeviceSynchronize());
    }
    return 0;
  }
  cublasLtHandle_t lt;
  if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) return 1;
  const size_t ltws_bytes = size_t{32} << 20;
  Dev ltws(ltws_bytes);
  std::printf("| %-22s | %-12s | %2s | %7s | %8s | %5s | %6s | %14s | %7s |\n", "matrix (group)", "N x K", "M", "MB",
              "us", "TB/s", "%peak", "cuBLASLt us", "speedup");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|  (FP8 rows add: stream us | direct us)\n");
  // DSV4_BENCH_FP8=1: every FP8 shape at M = 1, 4, 16, no MoE rows.
  const bool fp8_only = std::getenv("DSV4_BENCH_FP8") != nullptr;
  const std::vector<int> ms = std::getenv("DSV4_BENCH_QUICK") ? std::vector<int>{1}
                              : fp8_only                      ? std::vector<int>{1, 4, 16}
                                                              : std::vector<int>{1, 2, 4, 8, 16};
  if (std::getenv("DSV4_BENCH_QUICK")) {
    bench_fp8(lt, ltws.p, ltws_bytes, "wq_b", 32768, 1024, ms);
    bench_fp8(lt, ltws.p, ltws_bytes, "wkv", 512, 4096, ms);
    bench_fp8(lt, ltws.p, ltws_bytes, "wo_b", 4096, 8192, ms);
    bench_moe(lt, ltws.p, ltws_bytes, 4, ms);
    bench_moe(lt, ltws.p, ltws_bytes, 6, ms);
    return 0;
  }
  struct S { const char* name; int64_t n, k; };
  const S shapes[] = {{"wq_a", 1024, 4096},          {"wkv", 512, 4096},          {"wq_a|wkv (group)", 1536, 4096},
                      {"wq_b", 32768, 1024},         {"indexer wq_b", 8192, 1024}, {"wq_b|idx wq_b (group)", 40960, 1024},
                      {"wo_b", 4096, 8192},          {"shared w1", 2048, 4096},   {"shared w1|w3 (group)", 4096, 4096},
                      {"shared w2", 4096, 2048}};
  for (const S& s : shapes) bench_fp8(lt, ltws.p, ltws_bytes, s.name, s.n, s.k, ms);
  if (!fp8_only) {
    bench_moe(lt, ltws.p, ltws_bytes, 4, ms);
    bench_moe(lt, ltws.p, ltws_bytes, 6, {1, 4, 16});
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
                        "\"direct_us\": %.3f}%s\n",
                     r.name.c_str(), r.shape.c_str(), r.m, r.mb, r.us, r.tbs, 100 * r.tbs / kPeakTBs, r.lt_us,
                     r.lt_kind.c_str(), r.us_stream, r.us_direct, i + 1 < rows.size() ? "," : "");
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  return 0;
}
