// Decode-path linear benchmark: linear() with linear_small (lib/cuda/linear_small.cu) against the
// older vectorised / scalar paths (LinearArgs::no_small) on the Flash decode shapes at 1, 2, 4, 8
// and 16 rows, in one run. Weights are random codes made on the device (fill_fp8_codes,
// fill_random_bytes, fill_scale_codes); before every timed launch a 256 MB buffer is rewritten so
// L2 (60 MB) holds none of the weights: the times are HBM-bound. CUDA events around each launch,
// 3 warm-ups, median of --reps (default 25). Prints shape, rows, µs, GB/s (weight + scale bytes /
// time), % of the 4.6 TB/s read peak and the speedup over the old path; --json FILE writes the rows.
// Never asserts on time.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels.hpp"
#include "dsv4/weight_view.hpp"

namespace {
namespace dc = dsv4::cuda;
using dsv4::WeightFormat;

constexpr double kPeak = 4.6e12;

#define CK(expr)                                                                                \
  do {                                                                                          \
    const cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

struct Shape {
  const char* name;
  WeightFormat fmt;
  int64_t out, in;
  int64_t out_group = 0;
  bool quant = false, bf16 = false;
  int top_k = 0;  // > 0: an FP4 expert stack, every row its own expert (x_rows: slot → token)
};

struct Row {
  std::string name;
  int rows;
  double us_small, us_old, bytes;
};

// Read-only probe: streams the same bytes with 16-byte non-coherent loads and no math (one word per
// CTA is written so the loads stay), a normal launch — the ceiling of this harness for a shape.
__global__ void __launch_bounds__(256) read_probe_kernel(const uint4* p, int64_t n16, unsigned* sink) {
  unsigned acc = 0;
  for (int64_t i = blockIdx.x * int64_t{256} + threadIdx.x; i < n16; i += int64_t{gridDim.x} * 256) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p + i));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = nullptr;
  const char* only = nullptr;  // --only SUBSTR: the shapes whose name contains it
  int reps = 25, only_rows = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) only_rows = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--reps N] [--only SUBSTR] [--rows N]\n", argv[0]);
      return 2;
    }
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  const WeightFormat f8 = WeightFormat::fp8, f4 = WeightFormat::fp4, b16 = WeightFormat::bf16, f32 = WeightFormat::f32;
  const Shape shapes[] = {
      {"fp8 wq_a|wkv 1536x4096", f8, 1536, 4096, 0, true, true},
      {"fp8 wq_a 1024x4096", f8, 1024, 4096, 0, true, true},
      {"fp8 wkv 512x4096", f8, 512, 4096, 0, true, true},
      {"fp8 wq_b 32768x1024", f8, 32768, 1024, 0, true, true},
      {"fp8 wo_a 8192x4096 g1024", f8, 8192, 4096, 1024, false, true},
      {"fp8 wo_b 4096x8192", f8, 4096, 8192, 0, true, true},
      {"fp8 idx wq_b 8192x1024", f8, 8192, 1024, 0, true, true},
      {"fp8 shared w1|w3 4096x4096", f8, 4096, 4096, 0, true, true},
      {"fp8 shared w1 2048x4096", f8, 2048, 4096, 0, true, true},
      {"fp8 shared w2 4096x2048", f8, 4096, 2048, 0, true, true},
      {"fp4 expert w1|w3 4096x4096", f4, 4096, 4096, 0, true, true, 4},
      {"fp4 expert w1 2048x4096", f4, 2048, 4096, 0, true, true, 4},
      {"fp4 expert w2 4096x2048", f4, 4096, 2048, 0, true, true, 4},
      {"bf16 compressor 1024x4096", b16, 1024, 4096},
      {"bf16 compressor 512x4096", b16, 512, 4096},
      {"bf16 weights_proj 64x4096", b16, 64, 4096},
      {"bf16 lm head 129280x4096", b16, 129280, 4096},
      {"f32 router 256x4096", f32, 256, 4096},
      {"f32 hc mix 96x4096 g24", f32, 96, 4096, 24},
  };
  const int row_counts[] = {1, 2, 4, 8, 16};

  // L2 flush buffer and events.
  const size_t flush_bytes = size_t{256} << 20;
  void* flush = nullptr;
  CK(cudaMalloc(&flush, flush_bytes));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));

  std::vector<Row> out_rows;
  std::printf("%-28s %4s %10s %9s %7s %10s %9s %8s\n", "shape", "rows", "small us", "GB/s", "%peak", "old us",
              "old GB/s", "speedup");
  unsigned* sink = nullptr;
  CK(cudaMalloc(&sink, 4096 * sizeof(unsigned)));
  for (const Shape& s : shapes) {
    if (only && !std::strstr(s.name, only)) continue;
    dsv4::WeightView w;
    w.format = s.fmt;
    w.out = s.out;
    w.in = s.in;
    if (s.fmt == f8) {
      w.block_out = w.block_in = 128;
      w.scale_cols = (s.in + 127) / 128;
    } else if (s.fmt == f4) {
      w.block_in = 32;
      w.scale_cols = (s.in + 31) / 32;
    }
    const int experts = s.top_k > 0 ? 16 : 1;  // distinct experts for up to 16 rows
    const int64_t db = w.data_bytes(), sb = w.scale_bytes();
    uint8_t *data = nullptr, *scale = nullptr;
    CK(cudaMalloc(&data, static_cast<size_t>(db * experts)));
    CK(cudaMalloc(&scale, static_cast<size_t>(std::max<int64_t>(sb * experts, 16))));
    if (s.fmt == f8) CK(dc::fill_fp8_codes(data, db * experts, 1234, 448.f, st));
    else CK(dc::fill_random_bytes(data, db * experts, 1234, st));  // fp4 codes; bf16 / f32 bit patterns
    if (sb > 0) CK(dc::fill_scale_codes(scale, sb * experts, 99, 120, 3, st));
    w.data = data;
    w.scale = sb > 0 ? scale : nullptr;

    const int64_t groups = s.out_group > 0 ? s.out / s.out_group : 1;
    const int64_t x_stride = groups * s.in;
    const int max_rows = 16;
    std::vector<float> hx(static_cast<size_t>(max_rows * x_stride));
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto& v : hx) v = nd(rng);
    float *x = nullptr, *y = nullptr;
    int32_t *ids = nullptr, *xr = nullptr;
    CK(cudaMalloc(&x, hx.size() * sizeof(float)));
    CK(cudaMemcpy(x, hx.data(), hx.size() * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMalloc(&y, static_cast<size_t>(max_rows * s.out) * sizeof(float)));
    std::vector<int32_t> hids(max_rows), hxr(max_rows);
    for (int r = 0; r < max_rows; ++r) {
      hids[r] = r;  // each row its own expert
      hxr[r] = s.top_k > 0 ? r / s.top_k : r;
    }
    CK(cudaMalloc(&ids, max_rows * sizeof(int32_t)));
    CK(cudaMalloc(&xr, max_rows * sizeof(int32_t)));
    CK(cudaMemcpy(ids, hids.data(), max_rows * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(xr, hxr.data(), max_rows * sizeof(int32_t), cudaMemcpyHostToDevice));

    {
      // The probe over the weight bytes one launch reads (for an expert stack: 4 experts).
      const int64_t n16 = (db * (s.top_k > 0 ? 4 : 1)) / 16;
      std::vector<float> t;
      for (int i = 0; i < reps + 3; ++i) {
        CK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, st));
        CK(cudaEventRecord(e0, st));
        read_probe_kernel<<<1056, 256, 0, st>>>(reinterpret_cast<const uint4*>(data), n16, sink);
        CK(cudaGetLastError());
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 3) t.push_back(ms * 1000.f);
      }
      const double us = median(t);
      std::printf("%-28s %4s %10.2f %9.0f %6.1f%%   (read-only probe, same bytes)\n", s.name, "-", us,
                  n16 * 16 / us * 1e-3, 100.0 * n16 * 16 / (us * 1e-6) / kPeak);
    }
    for (int rows : row_counts) {
      if (only_rows > 0 && rows != only_rows) continue;
      dc::LinearArgs a;
      a.w = w;
      if (s.top_k > 0) {
        a.expert_ids = ids;
        a.expert_data_stride = db;
        a.expert_scale_stride = sb;
        a.x_rows = xr;
      }
      a.x = x;
      a.x_stride = x_stride;
      a.y = y;
      a.y_stride = s.out;
      a.rows = rows;
      a.out_group = s.out_group;
      a.quant_act = s.quant;
      a.bf16_out = s.bf16;
      const bool small_ok = dc::linear_small(a, st) == cudaSuccess;  // also a warm-up
      CK(cudaStreamSynchronize(st));
      double us[3] = {0, 0, 0};  // linear_small (tensor cores where they apply), the old path, CUDA cores only
      for (int variant = 0; variant < 3; ++variant) {
        a.no_small = variant == 1;
        a.no_small_mma = variant == 2;
        if (variant == 0 && !small_ok) {
          us[0] = -1;
          continue;
        }
        for (int i = 0; i < 3; ++i) CK(dc::linear(a, st));
        std::vector<float> t;
        for (int i = 0; i < reps; ++i) {
          CK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, st));
          CK(cudaEventRecord(e0, st));
          CK(dc::linear(a, st));
          CK(cudaEventRecord(e1, st));
          CK(cudaEventSynchronize(e1));
          float ms = 0;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          t.push_back(ms * 1000.f);
        }
        us[variant] = median(t);
      }
      const double bytes = static_cast<double>(db + sb) * (s.top_k > 0 ? rows : 1);
      out_rows.push_back({s.name, rows, us[0], us[1], bytes});
      if (us[0] > 0)
        std::printf("%-28s %4d %10.2f %9.0f %6.1f%% %10.2f %9.0f %7.2fx   cuda-core %8.2f us\n", s.name, rows, us[0],
                    bytes / us[0] * 1e-3, 100.0 * bytes / (us[0] * 1e-6) / kPeak, us[1], bytes / us[1] * 1e-3,
                    us[1] / us[0], us[2]);
      else
        std::printf("%-28s %4d %10s %9s %7s %10.2f %9.0f %8s\n", s.name, rows, "n/a", "-", "-", us[1],
                    bytes / us[1] * 1e-3, "-");
      std::fflush(stdout);
    }
    CK(cudaFree(data));
    CK(cudaFree(scale));
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaFree(ids));
    CK(cudaFree(xr));
  }
  CK(cudaFree(sink));
  if (json) {
    FILE* f = std::fopen(json, "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", json);
      return 1;
    }
    std::fprintf(f, "[\n");
    for (size_t i = 0; i < out_rows.size(); ++i) {
      const Row& r = out_rows[i];
      std::fprintf(f,
                   "  {\"shape\": \"%s\", \"rows\": %d, \"bytes\": %.0f, \"small_us\": %.3f, \"old_us\": %.3f, "
                   "\"small_gbps\": %.1f, \"old_gbps\": %.1f}%s\n",
                   r.name.c_str(), r.rows, r.bytes, r.us_small, r.us_old, r.us_small > 0 ? r.bytes / r.us_small * 1e-3 : 0.0,
                   r.bytes / r.us_old * 1e-3, i + 1 < out_rows.size() ? "," : "");
    }
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  CK(cudaFree(flush));
  return 0;
}
