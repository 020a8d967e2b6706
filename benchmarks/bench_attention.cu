// Sparse attention benchmark: sparse_attention (lib/cuda/kernels.hpp) with the tensor-core kernels
// (sparse_attention_mma, the default for official numerics: "new" = its automatic choice, the
// decode kernel for small S and the one-CTA-per-token kernel otherwise), the one-CTA-per-token
// kernel alone ("old" = the path before the decode kernel, forced through the test hook
// sparse_attention_mma_variant) and no_mma = true (the CUDA-core kernel, one CTA per (token,
// head)) in the same run, at DeepSeek-V4-Flash shapes (H 64, hd 512, W 128, topk 512): CSA prefill
// chunks (512 selected entries per query), HCA (ratio 128), sliding window only, and decode
// (S = 1, 2, and 4 / 8 / 16 tokens to show where the automatic choice switches). The two decode
// rows of the brief are "sliding decode" (p0 65536, 128 window keys) and "csa decode" (p0 65536,
// 640 keys). Inputs are bf16-representable random values made on the device (official numerics).
// Each time is the median of >= 10 launches (CUDA events, after warm-up), each launch queued
// behind a 50 µs spin kernel so that the launcher's host work (attribute / occupancy queries) is
// hidden and the events time the GPU work alone; "host us" is the launcher's CPU time per call.
// Prints µs, tokens/s, achieved TFLOP/s (2 products × 2 flops × H × hd × keys) and the speedups;
// `--json FILE` writes the rows as JSON. Never asserts on time.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels.hpp"

// Benchmark hook of lib/cuda/attention_mma.cu (not part of kernels.hpp's contract): path 0 automatic,
// 1 the one-CTA-per-token kernel, 2 the decode kernel at cluster size `cluster` (0 automatic).
namespace dsv4::cuda {
cudaError_t sparse_attention_mma_variant(const AttentionArgs& a, int path, int cluster, cudaStream_t stream);
}

#define CK(x)                                                                                            \
  do {                                                                                                   \
    cudaError_t e_ = (x);                                                                                \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, #x); \
      std::exit(1);                                                                                      \
    }                                                                                                    \
  } while (0)

namespace {

namespace dc = dsv4::cuda;

// Approximately N(0, scale²) values rounded to bf16 (sum of four hashed uniforms).
__global__ void fill_bf16_values(float* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 31;
      h *= 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
      acc += static_cast<float>(h >> 40) * (1.0f / 16777216.0f) - 0.5f;
    }
    float v = acc * 1.7320508f * scale;  // variance of the sum of 4 U(-.5,.5) is 1/3
    if (v == 0.f) v = 1e-3f;
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // round to nearest even bf16
    memcpy(&v, &u, 4);
    p[i] = v;
  }
}
void fill(float* p, size_t n, float scale) {
  static uint64_t seed = 777;
  fill_bf16_values<<<2048, 256>>>(p, n, seed += 0x9876543, scale);
  CK(cudaGetLastError());
}

struct Case {
  std::string name;
  int ratio;
  int64_t p0, S;
};

struct Row {
  std::string name;
  int64_t p0, S, keys;
  double us_new, us_old, us_ref, host_new;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Keeps the stream busy for ~ns nanoseconds (globaltimer), so that what is queued after it starts
// back to back with the events around it.
__global__ void spin_kernel(uint64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

struct Timing {
  double gpu_us, host_us;
};

Timing time_it(const std::function<cudaError_t()>& call, int reps) {
  for (int i = 0; i < 2; ++i) CK(call());
  CK(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<double> us, host;
  for (int r = 0; r < reps; ++r) {
    spin_kernel<<<1, 1>>>(50000);
    CK(cudaGetLastError());
    CK(cudaEventRecord(e0));
    const auto h0 = std::chrono::steady_clock::now();
    CK(call());
    const auto h1 = std::chrono::steady_clock::now();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t = 0;
    CK(cudaEventElapsedTime(&t, e0, e1));
    us.push_back(t * 1e3);
    host.push_back(std::chrono::duration<double, std::micro>(h1 - h0).count());
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return {median(us), median(host)};
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = nullptr;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  constexpr int H = 64, hd = 512, W = 128, topk = 512;
  const std::vector<Case> cases = {
      {"csa prefill", 4, 8192, 1024},  {"csa prefill", 4, 8192, 8192},   {"hca prefill", 128, 7168, 1024},
      {"hca prefill", 128, 0, 8192},   {"sliding prefill", 0, 4096, 1024}, {"csa decode", 4, 4096, 1},
      {"csa decode", 4, 65536, 1},     {"hca decode", 128, 4096, 1},     {"hca decode", 128, 65536, 1},
      {"sliding decode", 0, 65536, 1}, {"sliding decode", 0, 65536, 2},  {"csa decode", 4, 65536, 2},
      {"hca decode", 128, 1048576, 1}, {"csa decode x4", 4, 65536, 4},   {"csa decode x8", 4, 65536, 8},
      {"csa decode x16", 4, 65536, 16},
  };
  int64_t maxS = 0, maxE = 0;
  for (const Case& c : cases) {
    maxS = std::max(maxS, c.S);
    if (c.ratio) maxE = std::max(maxE, (c.p0 + c.S) / c.ratio);
  }
  const int64_t Wr = W + 8;
  float *q, *kv, *win, *ent, *sink, *o;
  int32_t *sel, *nsel;
  CK(cudaMalloc(&q, size_t(maxS) * H * hd * 4));
  CK(cudaMalloc(&o, size_t(maxS) * H * hd * 4));
  CK(cudaMalloc(&kv, size_t(maxS) * hd * 4));
  CK(cudaMalloc(&win, size_t(Wr) * hd * 4));
  CK(cudaMalloc(&ent, size_t(std::max<int64_t>(maxE, 1)) * hd * 4));
  CK(cudaMalloc(&sink, H * 4));
  CK(cudaMalloc(&sel, size_t(maxS) * topk * 4));
  CK(cudaMalloc(&nsel, size_t(maxS) * 4));
  fill(q, size_t(maxS) * H * hd, 1.5f);
  fill(kv, size_t(maxS) * hd, 1.0f);
  fill(win, size_t(Wr) * hd, 1.0f);
  fill(ent, size_t(std::max<int64_t>(maxE, 1)) * hd, 1.0f);
  fill(sink, H, 2.0f);

  std::mt19937_64 rng(42);
  std::vector<Row> rows;
  std::printf(
      "sparse_attention, H %d, hd %d, W %d, topk %d (official numerics); new = mma automatic, old = mma "
      "one-CTA-per-token kernel, no_mma = CUDA-core kernel\n",
      H, hd, W, topk);
  std::printf("%-16s %7s %6s %9s | %9s %9s %10s %8s | %9s %8s | %9s | %7s %7s\n", "case", "p0", "S", "keys",
              "new us", "host us", "tok/s", "TFLOP/s", "old us", "TFLOP/s", "no_mma us", "old/new", "ref/new");
  for (const Case& c : cases) {
    const int64_t n_entries = c.ratio ? (c.p0 + c.S) / c.ratio : 0;
    int64_t keys = 0;
    if (c.ratio == 4) {
      // ascending selections of min(visible, 512) ids, one random id per stride of the visible range
      std::vector<int32_t> hs(size_t(c.S) * topk), hn(size_t(c.S));
      for (int64_t s = 0; s < c.S; ++s) {
        const int64_t vis = std::min(n_entries, (c.p0 + s + 1) / 4), n = std::min<int64_t>(vis, topk);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t lo = i * vis / n, hi = (i + 1) * vis / n;
          hs[s * topk + i] = static_cast<int32_t>(lo + int64_t(rng() % uint64_t(hi - lo)));
        }
        hn[s] = static_cast<int32_t>(n);
      }
      CK(cudaMemcpy(sel, hs.data(), hs.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(nsel, hn.data(), hn.size() * 4, cudaMemcpyHostToDevice));
    }
    for (int64_t s = 0; s < c.S; ++s) {
      const int64_t p = c.p0 + s;
      keys += std::min<int64_t>(p + 1, W);
      if (c.ratio == 4) keys += std::min<int64_t>(std::min(n_entries, (p + 1) / 4), topk);
      else if (c.ratio > 0) keys += std::min(n_entries, (p + 1) / c.ratio);
    }
    dc::AttentionArgs a;
    a.q = q;
    a.kv = kv;
    a.window = win;
    a.window_ring = Wr;
    a.W = W;
    a.entries = ent;
    a.n_entries = n_entries;
    a.ratio = c.ratio;
    a.sel = sel;
    a.n_sel = nsel;
    a.topk = topk;
    a.sink = sink;
    a.H = H;
    a.hd = hd;
    a.official = true;
    a.p0 = c.p0;
    a.S = c.S;
    a.o = o;
    const int reps = c.S >= 4096 ? 10 : 25;
    const Timing t_new = time_it([&] { return dc::sparse_attention(a, nullptr); }, reps);
    const Timing t_old = time_it([&] { return dc::sparse_attention_mma_variant(a, 1, 0, nullptr); }, reps);
    dc::AttentionArgs ar = a;
    ar.no_mma = true;
    const Timing t_ref = time_it([&] { return dc::sparse_attention(ar, nullptr); }, reps);
    const double flop = 4.0 * H * hd * double(keys);
    const double us_new = t_new.gpu_us, us_old = t_old.gpu_us, us_ref = t_ref.gpu_us;
    std::printf("%-16s %7lld %6lld %9lld | %9.1f %9.1f %10.0f %8.1f | %9.1f %8.1f | %9.1f | %6.2fx %6.1fx\n",
                c.name.c_str(), static_cast<long long>(c.p0), static_cast<long long>(c.S),
                static_cast<long long>(keys), us_new, t_new.host_us, double(c.S) / (us_new * 1e-6),
                flop / (us_new * 1e-6) / 1e12, us_old, flop / (us_old * 1e-6) / 1e12, us_ref, us_old / us_new,
                us_ref / us_new);
    rows.push_back({c.name, c.p0, c.S, keys, us_new, us_old, us_ref, t_new.host_us});
  }
  if (json) {
    FILE* f = std::fopen(json, "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", json);
      return 1;
    }
    std::fprintf(f, "{\"benchmark\": \"sparse_attention\", \"H\": %d, \"hd\": %d, \"W\": %d, \"topk\": %d, \"rows\": [\n",
                 H, hd, W, topk);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const double flop = 4.0 * H * hd * double(r.keys);
      std::fprintf(f,
                   "  {\"case\": \"%s\", \"p0\": %lld, \"S\": %lld, \"keys\": %lld, \"mma_us\": %.3f, "
                   "\"mma_host_us\": %.3f, \"mma_token_kernel_us\": %.3f, \"no_mma_us\": %.3f, \"mma_tflops\": %.3f, "
                   "\"no_mma_tflops\": %.3f, \"speedup\": %.3f, \"speedup_vs_token_kernel\": %.3f}%s\n",
                   r.name.c_str(), static_cast<long long>(r.p0), static_cast<long long>(r.S),
                   static_cast<long long>(r.keys), r.us_new, r.host_new, r.us_old, r.us_ref,
                   flop / (r.us_new * 1e-6) / 1e12, flop / (r.us_ref * 1e-6) / 1e12, r.us_ref / r.us_new,
                   r.us_old / r.us_new, i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  cudaFree(q);
  cudaFree(o);
  cudaFree(kv);
  cudaFree(win);
  cudaFree(ent);
  cudaFree(sink);
  cudaFree(sel);
  cudaFree(nsel);
  return 0;
}
