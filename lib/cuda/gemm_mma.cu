// gemm_bf16_promoted (contract: lib/cuda/kernels.hpp, section gemm_mma.cu): C = A · Bᵀ, bf16 × bf16
// → f32 on the tensor cores with promoted accumulation.
//
// Numerics. Every mma.sync m16n8k16 is issued with a ZERO accumulator operand, so it returns the sum
// of one group of 16 exact bf16 × bf16 products (the tensor core's own alignment / truncation then
// touches only those 16 products, never a running sum), and its 4 results are added to the f32
// register accumulators with __fadd_rn (IEEE round-to-nearest; an add, never fused with a product).
// The result is a recursive f32 summation of the K/16 group sums (with split-K: of the K-slice sums
// of group sums, added in slice order: another summation tree of the same group sums). Error bound
// (first order): |Ĉ − C| ≤ ((⌈K/16⌉ − 1)·u + e_g)·Σ|a·b|, e_g the per-group mma error. Tested through
// Gemm::linear (tests/gpu/test_dense_kernels.cpp: every format at prefill row counts against
// cpu::linear, and the accumulation-error statistics: measured mean 0.26·u·Σ|a·b|, bias −0.07, on
// the H200 2026-12-02, against cuBLASLt's 3.85 / −3.49). Deterministic: fixed order, no atomics.
//
// Kernel. Classic Ampere-style multistage GEMM: 16-byte cp.async (zero-fill outside M, N, K) into a
// 4-stage shared-memory ring of BM × 32 and BN × 32 bf16 tiles, rows padded to 80 B (an odd
// multiple of 16 B: the 8 row addresses of every ldmatrix phase hit 8 distinct 16 B bank groups);
// ldmatrix.x4 fragments; warp tile WM × WN = (WM/16) × (WN/8) mma tiles. Four tile configurations
// (128×128 / 8 warps of 32×64; 64×128 / 4 warps of 32×64; 64×64 and 32×128 / 4 warps of 32×32; no
// 64×64 warp tile: its 128 accumulators plus the mma results in flight exceed 255 registers and
// spill); the launcher picks one and a K split by a small cost model (SMs, occupancy, waves). K split: the S CTAs of one output
// tile form a thread-block cluster (1, 1, S); each accumulates its K slice, writes its accumulators
// to its shared memory, and after a cluster barrier every CTA sums a share of the tile's mma tiles
// over ranks 0..S−1 in order through distributed shared memory (deterministic, no workspace).
// Output tiles are visited in groups of 16 M-tiles (L2 reuse of B across the group).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kBK = 32;          // K per pipeline stage (2 mma k-steps)
constexpr int kRow = kBK + 8;    // shared-memory row: 40 bf16 = 80 B
constexpr int kStages = 4;
constexpr int kGroupM = 16;      // M-tiles per raster group
constexpr int kMaxSplit = 8;     // portable cluster size

struct Params {
  const uint16_t* A;
  const uint16_t* B;
  float* C;
  int64_t lda, ldb, ldc;
  int M, N, K;
  int tiles_m, tiles_n, k_tiles;
  int vec2;  // C rows allow 8-byte stores (C 8-byte aligned, ldc even)
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
// d = A·B for one 16 × 8 × 16 tile from a ZERO accumulator (the group sum of 16 products).
__device__ __forceinline__ void mma_zero(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, float (&d)[4]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
}

__device__ __forceinline__ void store2(const Params& p, int row, int col, float v0, float v1) {
  if (row >= p.M) return;
  float* c = p.C + static_cast<int64_t>(row) * p.ldc + col;
  if (p.vec2 && col + 1 < p.N) {
    *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
  } else {
    if (col < p.N) c[0] = v0;
    if (col + 1 < p.N) c[1] = v1;
  }
}

template <int BM, int BN>
__host__ __device__ constexpr size_t smem_bytes() {
  const size_t pipe = static_cast<size_t>(kStages) * (BM + BN) * kRow * sizeof(uint16_t);
  const size_t part = static_cast<size_t>(BM) * BN * sizeof(float);
  return pipe > part ? pipe : part;
}

template <int BM, int BN, int WM, int WN, int MINB>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB) gemm_promoted_kernel(const Params p) {
  constexpr int kWarpsN = BN / WN;
  constexpr int kThreads = (BM / WM) * kWarpsN * 32;
  constexpr int MT = WM / 16, NT = WN / 8;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile");
  static_assert((BM * 4) % kThreads == 0 && (BN * 4) % kThreads == 0, "load split");
  constexpr int kACh = BM * 4 / kThreads, kBCh = BN * 4 / kThreads;  // 16-byte chunks per thread per stage
  constexpr int kRowsPerPass = kThreads / 4;
  constexpr uint32_t kStageA = BM * kRow * 2, kStage = (BM + BN) * kRow * 2;  // bytes: [A tile | B tile]
  constexpr bool kCanSplit = static_cast<size_t>(BM) * BN * 4 <= smem_bytes<BM, BN>();

  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t s_base = smem_u32(smem);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;

  // Output tile (grouped raster) and K slice.
  const int pid = blockIdx.x;
  const int group_tiles = kGroupM * p.tiles_n;
  const int first_m = (pid / group_tiles) * kGroupM;
  const int gsz = min(p.tiles_m - first_m, kGroupM);
  const int in_g = pid % group_tiles;
  const int m0 = (first_m + in_g % gsz) * BM, n0 = (in_g / gsz) * BN;
  const int S = static_cast<int>(gridDim.z), slice = static_cast<int>(blockIdx.z);
  const int kt_begin = static_cast<int>(static_cast<int64_t>(p.k_tiles) * slice / S);
  const int nk = static_cast<int>(static_cast<int64_t>(p.k_tiles) * (slice + 1) / S) - kt_begin;

  // Loads: thread → (row tid/4 + pass·kThreads/4, 16-byte chunk tid%4) of each tile. Rows past M / N
  // and chunks past K are zero-filled (src-size 0: nothing is read; the pointer may lie outside the
  // matrix, as in CUTLASS's zfill copies).
  const int lc = tid & 3, lr = tid >> 2;
  const uint16_t* ga = p.A + static_cast<int64_t>(m0 + lr) * p.lda + kt_begin * kBK + lc * 8;
  const uint16_t* gb = p.B + static_cast<int64_t>(n0 + lr) * p.ldb + kt_begin * kBK + lc * 8;
  const int64_t a_step = kRowsPerPass * p.lda, b_step = kRowsPerPass * p.ldb;
  bool a_ok[kACh], b_ok[kBCh];
#pragma unroll
  for (int it = 0; it < kACh; ++it) a_ok[it] = m0 + lr + it * kRowsPerPass < p.M;
#pragma unroll
  for (int it = 0; it < kBCh; ++it) b_ok[it] = n0 + lr + it * kRowsPerPass < p.N;
  int k_load = kt_begin * kBK + lc * 8;  // this thread's K index in the next tile to load
  uint32_t wr = s_base + static_cast<uint32_t>((lr * kRow + lc * 8) * 2);  // stage to write
  const uint32_t s_end = s_base + kStages * kStage;
  auto load_next = [&]() {
    const bool kok = k_load < p.K;  // K % 8 == 0: a chunk lies wholly inside or outside K
#pragma unroll
    for (int it = 0; it < kACh; ++it) cp_async16(wr + it * kRowsPerPass * kRow * 2, ga + it * a_step, kok && a_ok[it]);
#pragma unroll
    for (int it = 0; it < kBCh; ++it)
      cp_async16(wr + kStageA + it * kRowsPerPass * kRow * 2, gb + it * b_step, kok && b_ok[it]);
    ga += kBK;
    gb += kBK;
    k_load += kBK;
    wr += kStage;
    if (wr >= s_end) wr -= kStages * kStage;
  };

  // ldmatrix lane addresses. A (x4): matrices (rows 0-7 | 8-15) × (k 0-7 | 8-15) → a0..a3 of the
  // m16n8k16 A fragment. B (x4): (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
  // → b0, b1 of n-tile 2jp and of n-tile 2jp + 1.
  const uint32_t a_lane = static_cast<uint32_t>(((wm * WM + (lane & 15)) * kRow + (lane >> 4) * 8) * 2);
  const uint32_t b_lane =
      kStageA + static_cast<uint32_t>(((wn * WN + (lane & 7) + ((lane >> 4) << 3)) * kRow + ((lane >> 3) & 1) * 8) * 2);

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) load_next();
    cp_async_commit();
  }
  uint32_t rd = s_base;  // stage to read
  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt − 1 is no longer read
    if (kt + kStages - 1 < nk) load_next();
    cp_async_commit();
    const uint32_t aS = rd + a_lane, bS = rd + b_lane;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t bfr[NT][2];
#pragma unroll
      for (int jp = 0; jp < NT / 2; ++jp)
        ldsm_x4(bS + (jp * 16 * kRow + kk) * 2, bfr[2 * jp][0], bfr[2 * jp][1], bfr[2 * jp + 1][0], bfr[2 * jp + 1][1]);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        uint32_t af[4];
        ldsm_x4(aS + (i * 16 * kRow + kk) * 2, af[0], af[1], af[2], af[3]);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          float t[4];
          mma_zero(af, bfr[j][0], bfr[j][1], t);
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][j][e] = __fadd_rn(acc[i][j][e], t[e]);  // the promotion
        }
      }
    }
    rd += kStage;
    if (rd >= s_end) rd -= kStages * kStage;
  }

  const int g = lane >> 2, q = lane & 3;
  const int row_base = m0 + wm * WM + g, col_base = n0 + wn * WN + 2 * q;
  if (!kCanSplit || S == 1) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        store2(p, row_base + i * 16, col_base + j * 8, acc[i][j][0], acc[i][j][1]);
        store2(p, row_base + i * 16 + 8, col_base + j * 8, acc[i][j][2], acc[i][j][3]);
      }
    return;
  }

  if constexpr (kCanSplit) {
  // K split: partials through distributed shared memory, summed in rank order.
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers are free
  float4* part = reinterpret_cast<float4*>(smem);
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
      part[(i * NT + j) * kThreads + tid] = make_float4(acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int rank = static_cast<int>(cluster.block_rank());
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = i * NT + j;
      if (c % S != rank) continue;
      float4 v = cluster.map_shared_rank(part, 0)[c * kThreads + tid];
      for (int r = 1; r < S; ++r) {
        const float4 w = cluster.map_shared_rank(part, r)[c * kThreads + tid];
        v.x = __fadd_rn(v.x, w.x);
        v.y = __fadd_rn(v.y, w.y);
        v.z = __fadd_rn(v.z, w.z);
        v.w = __fadd_rn(v.w, w.w);
      }
      store2(p, row_base + i * 16, col_base + j * 8, v.x, v.y);
      store2(p, row_base + i * 16 + 8, col_base + j * 8, v.z, v.w);
    }
  cluster.sync();  // no CTA leaves while another still reads its shared memory
  }
}

// One tile configuration: its kernel, shape and the launcher's cost-model weight.
struct Config {
  void (*kernel)(Params);
  int bm, bn, warps;
  size_t smem;
  double eff;      // relative per-SM throughput when the SM is busy (guess; larger tiles reuse more)
  bool can_split;  // partials fit the shared memory
};

template <int BM, int BN, int WM, int WN, int MINB>
Config make_config(double eff) {
  return Config{&gemm_promoted_kernel<BM, BN, WM, WN, MINB>, BM, BN, (BM / WM) * (BN / WN), smem_bytes<BM, BN>(), eff,
                static_cast<size_t>(BM) * BN * 4 <= smem_bytes<BM, BN>()};
}

const Config* configs(int& count) {
  static const Config cs[] = {
      make_config<128, 128, 32, 64, 1>(1.00),  // 8 warps, 80 KB, 1 CTA / SM (226 registers)
      make_config<64, 128, 32, 64, 2>(0.90),   // 4 warps, 60 KB, 2 CTAs / SM (232 registers)
      make_config<64, 64, 32, 32, 4>(0.75),    // 4 warps, 40 KB, 4 CTAs / SM (126 registers)
      make_config<32, 128, 32, 32, 4>(0.70),   // 4 warps, 50 KB (few rows)
  };
  count = static_cast<int>(sizeof cs / sizeof cs[0]);
  return cs;
}

struct DeviceInfo {
  int sms = 0;
  int occ[8] = {};  // resident CTAs per SM of each config
  bool ok = false;
};

// Per device (queried once; cudaFuncSetAttribute is repeated per launch: it is per device).
const DeviceInfo& device_info(int dev) {
  constexpr int kMaxDev = 64;
  static DeviceInfo info[kMaxDev];
  static bool done[kMaxDev] = {};
  DeviceInfo& d = info[dev < kMaxDev && dev >= 0 ? dev : 0];
  if (dev < 0 || dev >= kMaxDev || done[dev]) return d;
  int n = 0;
  const Config* cs = configs(n);
  if (cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return d;
  for (int i = 0; i < n; ++i) {
    if (cudaFuncSetAttribute(cs[i].kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(cs[i].smem)) != cudaSuccess)
      return d;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&d.occ[i], cs[i].kernel, cs[i].warps * 32, cs[i].smem) !=
        cudaSuccess)
      return d;
    d.occ[i] = std::max(d.occ[i], 1);
  }
  d.ok = true;
  done[dev] = true;  // benign race: every thread computes the same values
  return d;
}

// Estimated time (arbitrary units) of config c with a K split s: waves of resident CTAs, each wave
// as long as the busiest SM's CTAs take at that SM's throughput (8 resident warps saturate an SM).
double cost(const Config& c, int occ, int sms, int64_t M, int64_t N, int64_t k_tiles, int s) {
  const int64_t tiles = ((M + c.bm - 1) / c.bm) * ((N + c.bn - 1) / c.bn);
  const int64_t ctas = tiles * s;
  const int64_t slots = static_cast<int64_t>(sms) * occ;
  const int64_t waves = (ctas + slots - 1) / slots;
  const int64_t per_sm = std::min<int64_t>(occ, (ctas + sms - 1) / sms);
  const double thr = c.eff * std::min(1.0, static_cast<double>(per_sm * c.warps) / 8.0);
  const double k_per_cta = static_cast<double>((k_tiles + s - 1) / s) * kBK + 4.0 * kBK + (s > 1 ? 2.0 * kBK : 0.0);
  return static_cast<double>(waves) * static_cast<double>(per_sm) * c.bm * c.bn * k_per_cta / thr;
}

}  // namespace

cudaError_t gemm_bf16_promoted(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C, int64_t ldc,
                               int64_t M, int64_t N, int64_t K, cudaStream_t stream) {
  if (M < 0 || N < 0 || K < 0) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  if (!C || (K > 0 && (!A || !B)) || ldc < N || lda < K || ldb < K) return cudaErrorInvalidValue;
  if (K % 8 != 0 || lda % 8 != 0 || ldb % 8 != 0 || (reinterpret_cast<uintptr_t>(A) & 15) != 0 ||
      (reinterpret_cast<uintptr_t>(B) & 15) != 0)
    return cudaErrorNotSupported;
  if (M > INT_MAX - 512 || N > INT_MAX - 512 || K > INT_MAX - 512) return cudaErrorNotSupported;

  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const DeviceInfo& info = device_info(dev);
  if (!info.ok) return cudaErrorNotSupported;
  int n = 0;
  const Config* cs = configs(n);
  const int64_t k_tiles = (K + kBK - 1) / kBK;

  int best = 0, best_s = 1;
  double best_cost = 0;
  for (int i = 0; i < n; ++i)
    for (int s = 1; s <= kMaxSplit; ++s) {
      if (s > 1 && (!cs[i].can_split || k_tiles / s < 8)) break;  // slices of ≥ 256 K
      const int64_t tiles = ((M + cs[i].bm - 1) / cs[i].bm) * ((N + cs[i].bn - 1) / cs[i].bn);
      if (tiles > INT_MAX) continue;
      const double t = cost(cs[i], info.occ[i], info.sms, M, N, k_tiles, s);
      if (best_cost == 0 || t < best_cost * 0.98) {  // ties go to the earlier (larger) tile / smaller split
        best = i;
        best_s = s;
        best_cost = t;
      }
    }
  if (best_cost == 0) return cudaErrorNotSupported;
  const Config& c = cs[best];

  Params p;
  p.A = A;
  p.B = B;
  p.C = C;
  p.lda = lda;
  p.ldb = ldb;
  p.ldc = ldc;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.tiles_m = static_cast<int>((M + c.bm - 1) / c.bm);
  p.tiles_n = static_cast<int>((N + c.bn - 1) / c.bn);
  p.k_tiles = static_cast<int>(k_tiles);
  p.vec2 = (ldc % 2 == 0 && (reinterpret_cast<uintptr_t>(C) & 7) == 0) ? 1 : 0;

  e = cudaFuncSetAttribute(c.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(c.smem));
  if (e != cudaSuccess) return e;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(p.tiles_m) * static_cast<unsigned>(p.tiles_n), 1, best_s);
  cfg.blockDim = dim3(c.warps * 32, 1, 1);
  cfg.dynamicSmemBytes = c.smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = static_cast<unsigned>(best_s);
  cfg.attrs = attr;
  cfg.numAttrs = best_s > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, c.kernel, p);
}

}  // namespace dsv4::cuda
