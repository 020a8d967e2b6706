// sparse_attention on the tensor cores (lib/cuda/kernels.hpp), official numerics only.
//
// One CTA (8 warps) computes all H ≤ 64 heads of one query token, so every key row is gathered
// once per token and shared by all heads (the existing kernel re-reads it per head). Both products
// run as mma.sync m16n8k16 bf16 → f32: q and the keys are bf16-representable f32 values in
// official numerics, so the bf16 operands are exact, every product is exact and only the f32
// summation order differs from the CPU twin (lib/cpu/attention.cpp).
//
// Numerics (those of sparse_attention_kernel, lib/cuda/attention_kernels.cu): l_j = f32(f32dot ·
// scale) with scale = 1/√hd in double; m = max over the real keys (the global max, not a running
// one); p_j = expf(l_j − m); the denominator e^{sink−m} + Σ p_j in f32 with unrounded p_j; the
// weighted sum with bf16(p_j); o = bf16(acc / den). Because m must be final before any p_j is
// rounded, there are two passes over the key tiles: pass 1 computes the logits and their max,
// pass 2 recomputes the same logits (same code, same bits), forms bf16 P in shared memory and
// accumulates P·K (K = V) on the tensor cores. Pass 2 walks the tiles in reverse so that the two
// tiles still resident from pass 1 are not gathered again.
//
// Tiles of 64 keys. Shared memory (hd 512, H 64): Q bf16 [64][hd] 65 KB, two key buffers bf16
// [64][hd] 130 KB (double buffering of the gather), P bf16 [64][64] 9 KB, the window's row
// pointers and the CSA selection row; rows padded by 16 bytes (odd multiples of 16 B: ldmatrix
// conflict-free). The gather of the next tile is software-pipelined through registers: 4 chunks
// of 16 keys, each thread holding 8 float4 of f32 in flight, issued/stored between quarters of the
// QK product (ld.global.nc → cvt bf16 → st.shared).
//
// Warps: QK: warp w computes S[16 heads (w%4) × 32 keys (w/4)] over all hd (accumulators 16 f32);
// PV: warp w owns all heads × hd/8 output dims (hd 512: 64 dims → 128 f32 accumulators).
//
// Small S: a thread-block cluster of C ≤ 8 CTAs per token splits the tiles; the maxima are
// exchanged through distributed shared memory, and the partial P·K sums and denominators (all
// relative to the same global m) are added in rank order by the cluster and divided once.
//
// Decode path (attention_decode_kernel; chosen automatically for small S, see attention_mma_launch): the
// token kernel above leaves decode to one long serial chain per SM (all 64 heads, gathers 32 KB per
// round trip, QK computed twice). At decode a token is spread instead over HG·C CTAs: grid (C, HG,
// S), HG = H/16 head groups (16 heads = the m16 rows of the MMA) × a cluster of C ≤ 16 CTAs
// (non-portable size above 8) splitting the token's key list into consecutive runs of 16-key
// groups. Each CTA gathers only its own keys (one pointer table, CSA ids read speculatively with
// n_sel, Q and the ids in the same round trip; a tile of 64 keys in one round trip of 32 float4
// per thread), computes each logit once (QK split over warps along keys and, for few keys, along
// hd: partial dot products added in slice order in shared memory, then l = f32(dot·scale)) and
// keeps the logits in shared memory, so pass 2 (after the cluster-wide max) forms p_j from the
// stored bits: same l_j, same m, same expf, same bf16 P, f32 denominator with unrounded p_j, P·K on
// the tensor cores. CTAs with more than 64 keys walk tiles of 64 (two resident, the gather of the
// next tile in flight during the current one; pass 2 in reverse). The partial P·K sums and
// denominators are added in rank order through distributed shared memory and divided once, like
// the token kernel's cluster path. Rounding points are unchanged; only f32 summation orders differ
// (dot products, denominators, P·K partials), all deterministic for a given (S, H, hd, key counts,
// SM count) — results are bit-reproducible run to run but not bit-identical across cluster sizes.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "dsv4/dtypes.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;  // 8 warps
constexpr int kTile = 64;      // keys per tile
constexpr int kChunks = 4;     // gather chunks per tile
constexpr int kChunkKeys = kTile / kChunks;
constexpr int kMaxHd = 512;
constexpr int kMaxH = 64;
constexpr int kStageF4 = kChunkKeys * kMaxHd / 4 / kThreads;  // float4 per thread per chunk (8)
constexpr int kMaxCluster = 8;
constexpr int kPsStride = kTile * 2 + 16;  // bytes per P row

struct Layout {
  int rs = 0;  // bytes per Q / key row: 2·hd + 16
  size_t q = 0, k = 0, p = 0, wptr = 0, sel = 0, misc = 0, total = 0;
};

__host__ __device__ inline Layout make_layout(int H, int hd, int W, int topk) {
  Layout L;
  L.rs = 2 * hd + 16;
  L.q = 0;
  L.k = L.q + static_cast<size_t>(H) * L.rs;
  L.p = L.k + 2 * static_cast<size_t>(kTile) * L.rs;  // also the cluster reduction area
  L.wptr = L.p + static_cast<size_t>(H) * kPsStride;
  L.sel = L.wptr + static_cast<size_t>(W) * sizeof(const float*);
  L.misc = L.sel + ((static_cast<size_t>(topk) * 4 + 15) / 16) * 16;
  L.total = L.misc + 8 * kMaxH * sizeof(float);
  return L;
}

// misc floats: [0,128) max partials [2][64], [128,256) den partials [2][64], [256,320) local max,
// [320,384) global max, [384,448) den total, [448,512) local den.
constexpr int kMiscMaxP = 0, kMiscDenP = 128, kMiscMaxL = 256, kMiscMax = 320, kMiscDen = 384, kMiscDenL = 448;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The keys of one token (same order and rules as sparse_attention_kernel's AttnKeys): window rows
// through a pointer table in shared memory, then the compressed entries (CSA: the selection row,
// copied to shared memory; an id outside [0, n_entries) is a skipped key). Null = no key (weight 0).
struct Keys {
  const float* const* wptr;
  const int32_t* sel;  // shared copy, or null (HCA / sliding)
  const float* entries;
  int nwin, n, hd;
  int64_t n_entries;
  __device__ __forceinline__ const float* row(int j) const {
    if (j >= n) return nullptr;
    if (j < nwin) return wptr[j];
    int i = j - nwin;
    if (sel) {
      i = sel[i];
      if (i < 0 || i >= n_entries) return nullptr;
    }
    return entries + static_cast<int64_t>(i) * hd;
  }
};

template <bool kFast>
struct Shape {
  int hb, hd;  // head blocks of 16, head dim
  __device__ __forceinline__ int HB() const { return kFast ? 4 : hb; }
  __device__ __forceinline__ int HD() const { return kFast ? 512 : hd; }
};

// f32 staging registers of one gather chunk (16 keys × hd).
struct Stage {
  float4 v[kStageF4];
};

template <bool kFast>
__device__ __forceinline__ void load_chunk(Stage& st, const Keys& ks, int tile, int chunk, Shape<kFast> sh) {
  const int hd = sh.HD(), q4 = hd / 4, tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < kStageF4; ++i) {
    const int idx = i * kThreads + tid;
    st.v[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (idx < kChunkKeys * q4) {
      const int key = idx / q4, c4 = idx % q4;
      const float* r = ks.row(tile * kTile + chunk * kChunkKeys + key);
      if (r) st.v[i] = __ldg(reinterpret_cast<const float4*>(r) + c4);
    }
  }
}

template <bool kFast>
__device__ __forceinline__ void store_chunk(const Stage& st, uint8_t* kbuf, int rs, int chunk, Shape<kFast> sh) {
  const int hd = sh.HD(), q4 = hd / 4, tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < kStageF4; ++i) {
    const int idx = i * kThreads + tid;
    if (idx < kChunkKeys * q4) {
      const int key = chunk * kChunkKeys + idx / q4, c4 = idx % q4;
      uint2 w;
      w.x = pack_bf16(st.v[i].x, st.v[i].y);
      w.y = pack_bf16(st.v[i].z, st.v[i].w);
      *reinterpret_cast<uint2*>(kbuf + static_cast<size_t>(key) * rs + c4 * 8) = w;
    }
  }
}

// The order in which a CTA visits its tiles t0…t1−1: pass 1 ascending, pass 2 descending; step v
// needs a gather unless its tile is still resident (the first two steps of pass 2).
struct Sched {
  int t0, R;
  __device__ __forceinline__ int tile(int v) const { return v < R ? t0 + v : t0 + (2 * R - 1 - v); }
  __device__ __forceinline__ bool gather(int v) const { return v < 2 * R && (v < R || v - R >= 2); }
};

template <bool kFast>
__global__ void __launch_bounds__(kThreads, 1) attention_mma_kernel(AttentionArgs a, double scale, int csize) {
  extern __shared__ __align__(16) uint8_t smem[];
  const Shape<kFast> sh{a.H / 16, a.hd};
  const int HB = sh.HB(), hd = sh.HD(), H = HB * 16;
  const Layout L = make_layout(H, hd, a.W, a.topk);
  const int rs = L.rs;
  uint8_t* qs = smem + L.q;
  uint8_t* kb = smem + L.k;
  uint8_t* ps = smem + L.p;
  const float** wptr = reinterpret_cast<const float**>(smem + L.wptr);
  int32_t* sels = reinterpret_cast<int32_t*>(smem + L.sel);
  float* misc = reinterpret_cast<float*>(smem + L.misc);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
  const int64_t s = blockIdx.x / csize;
  const int rank = static_cast<int>(blockIdx.x % csize);
  const int64_t p = a.p0 + s;

  // ---- the token's keys ----
  const int64_t win_first = p - a.W + 1 > 0 ? p - a.W + 1 : 0;
  const int nwin = static_cast<int>(p - win_first + 1);
  int ncomp = 0;
  const bool csa = a.ratio == 4;
  if (csa) {
    const int32_t ns = a.n_sel[s];
    ncomp = ns < 0 ? 0 : (ns > a.topk ? a.topk : ns);
  } else if (a.ratio > 0) {
    const int64_t vis = (p + 1) / a.ratio;
    ncomp = static_cast<int>(vis < a.n_entries ? vis : a.n_entries);
  }
  for (int j = tid; j < nwin; j += kThreads) {
    const int64_t pos = win_first + j;
    wptr[j] = pos < a.p0 ? a.window + (pos % a.window_ring) * hd : a.kv + (pos - a.p0) * hd;
  }
  if (csa)
    for (int i = tid; i < ncomp; i += kThreads) sels[i] = a.sel[s * a.topk + i];
  const Keys ks{wptr, csa ? sels : nullptr, a.entries, nwin, nwin + ncomp, hd, a.n_entries};
  const int T = (ks.n + kTile - 1) / kTile;
  const int t0 = static_cast<int>(static_cast<int64_t>(T) * rank / csize);
  const int t1 = static_cast<int>(static_cast<int64_t>(T) * (rank + 1) / csize);
  const Sched sc{t0, t1 - t0};

  // ---- Q → bf16 shared ----
  {
    const float4* qg = reinterpret_cast<const float4*>(a.q + s * static_cast<int64_t>(H) * hd);
    const int q4 = hd / 4, n4 = H * q4;
    for (int base = 0; base < n4; base += kThreads * 8) {
      float4 v[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int idx = base + i * kThreads + tid;
        v[i] = idx < n4 ? __ldg(qg + idx) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int idx = base + i * kThreads + tid;
        if (idx < n4) {
          uint2 w;
          w.x = pack_bf16(v[i].x, v[i].y);
          w.y = pack_bf16(v[i].z, v[i].w);
          *reinterpret_cast<uint2*>(qs + static_cast<size_t>(idx / q4) * rs + (idx % q4) * 8) = w;
        }
      }
    }
  }
  __syncthreads();  // wptr / sels

  // ---- prologue: tile of step 0 gathered, chunk 0 of step 1 in flight ----
  Stage stg;
  if (sc.R > 0) {
    const int tl = sc.tile(0);
    for (int ch = 0; ch < kChunks; ++ch) {
      load_chunk(stg, ks, tl, ch, sh);
      store_chunk(stg, kb + static_cast<size_t>(tl & 1) * kTile * rs, rs, ch, sh);
    }
    if (sc.gather(1)) load_chunk(stg, ks, sc.tile(1), 0, sh);
  }
  __syncthreads();

  // QK roles: head block qm, key half qh (32 keys).
  const int qm = warp & 3, qh = warp >> 2;
  const bool qk_active = qm < HB;
  const int ksteps = hd / 16, kq = ksteps / 4;  // k-steps per quarter (pump points)
  const uint32_t qs_a = smem_u32(qs) + (qm * 16 + (lane & 15)) * rs + (lane >> 4) * 16;
  const uint32_t kb_u = smem_u32(kb);
  const uint32_t kb_b_off = (qh * 32 + (lane & 7) + ((lane >> 4) << 3)) * rs + ((lane >> 3) & 1) * 16;
  // PV roles: all head blocks × dims [warp·hd/8, +hd/8): hd/64 n-tiles of 8.
  const int ntw = hd / 64;
  const uint32_t ps_u = smem_u32(ps);
  const uint32_t pv_a_off = (lane & 15) * kPsStride + (lane >> 4) * 16;
  const uint32_t pv_b_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * rs + (warp * (hd / 8) + (lane >> 4) * 8) * 2;

  float rmax[2] = {-INFINITY, -INFINITY}, mrow[2] = {0.f, 0.f}, dpart[2] = {0.f, 0.f};
  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;

  auto step = [&](int v, bool pass2) {
    const int tl = sc.tile(v);
    const uint32_t kcur = kb_u + static_cast<uint32_t>((tl & 1) * kTile * rs);
    const bool gnext = sc.gather(v + 1);
    const int tnext = gnext ? sc.tile(v + 1) : 0;
    uint8_t* knext = kb + static_cast<size_t>(tnext & 1) * kTile * rs;
    const bool gnn = sc.gather(v + 2);
    const int tnn = gnn ? sc.tile(v + 2) : 0;

    float sacc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int k = 0; k < 4; ++k) sacc[i][k] = 0.f;
#pragma unroll 1
    for (int qtr = 0; qtr < 4; ++qtr) {
      if (qk_active) {
#pragma unroll 8
        for (int kk = 0; kk < kq; ++kk) {
          const int k16 = qtr * kq + kk;
          uint32_t af[4], b01[4], b23[4];
          ldsm_x4(qs_a + k16 * 32, af);
          ldsm_x4(kcur + kb_b_off + k16 * 32, b01);
          ldsm_x4(kcur + kb_b_off + 16 * rs + k16 * 32, b23);
          mma_bf16(sacc[0], af, b01[0], b01[1]);
          mma_bf16(sacc[1], af, b01[2], b01[3]);
          mma_bf16(sacc[2], af, b23[0], b23[1]);
          mma_bf16(sacc[3], af, b23[2], b23[3]);
        }
      }
      // pump: store chunk qtr of the next tile, issue the loads of the following chunk
      if (gnext) store_chunk(stg, knext, rs, qtr, sh);
      if (qtr < kChunks - 1) {
        if (gnext) load_chunk(stg, ks, tnext, qtr + 1, sh);
      } else if (gnn) {
        load_chunk(stg, ks, tnn, 0, sh);
      }
    }

    // logits l = f32(dot · scale), −∞ for a missing key
    if (qk_active) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = tl * kTile + qh * 32 + nt * 8 + 2 * c + e;
          const bool ok = ks.row(j) != nullptr;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float l = ok ? static_cast<float>(static_cast<double>(sacc[nt][2 * r + e]) * scale) : -INFINITY;
            sacc[nt][2 * r + e] = l;
            if (!pass2) rmax[r] = fmaxf(rmax[r], l);
          }
        }
    }
    if (!pass2) {
      __syncthreads();  // the next tile's chunks are visible; this buffer may be overwritten
      return;
    }
    // p = expf(l − m): f32 into the denominator, bf16 into P
    if (qk_active) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float p0 = expf(sacc[nt][2 * r] - mrow[r]);
          const float p1 = expf(sacc[nt][2 * r + 1] - mrow[r]);
          dpart[r] += p0;
          dpart[r] += p1;
          const int row = qm * 16 + g + 8 * r, col = qh * 32 + nt * 8 + 2 * c;
          *reinterpret_cast<uint32_t*>(ps + row * kPsStride + col * 2) = pack_bf16(p0, p1);
        }
    }
    __syncthreads();
    // O += P · K
#pragma unroll
    for (int k16 = 0; k16 < kTile / 16; ++k16) {
      uint32_t af[4][4];
#pragma unroll
      for (int mb = 0; mb < 4; ++mb)
        if (mb < HB) ldsm_x4(ps_u + pv_a_off + mb * 16 * kPsStride + k16 * 32, af[mb]);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        if (2 * np < ntw) {
          uint32_t bf[4];
          ldsm_x4_t(kcur + pv_b_off + k16 * 16 * rs + np * 32, bf);
#pragma unroll
          for (int mb = 0; mb < 4; ++mb)
            if (mb < HB) {
              mma_bf16(acc[mb][2 * np], af[mb], bf[0], bf[1]);
              mma_bf16(acc[mb][2 * np + 1], af[mb], bf[2], bf[3]);
            }
        }
      }
    }
    __syncthreads();  // P and this buffer are rewritten next
  };

  for (int v = 0; v < sc.R; ++v) step(v, false);

  // ---- the max over real keys (cluster-wide) ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rmax[r] = fmaxf(rmax[r], __shfl_xor_sync(0xffffffffu, rmax[r], 1));
    rmax[r] = fmaxf(rmax[r], __shfl_xor_sync(0xffffffffu, rmax[r], 2));
    if (qk_active && c == 0) misc[kMiscMaxP + qh * 64 + qm * 16 + g + 8 * r] = rmax[r];
  }
  __syncthreads();
  if (tid < H) misc[kMiscMaxL + tid] = fmaxf(misc[kMiscMaxP + tid], misc[kMiscMaxP + 64 + tid]);
  if (csize > 1) {
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    if (tid < H) {
      float m = -INFINITY;
      for (int q = 0; q < csize; ++q) m = fmaxf(m, cl.map_shared_rank(misc, q)[kMiscMaxL + tid]);
      misc[kMiscMax + tid] = m;
    }
  } else if (tid < H) {
    misc[kMiscMax + tid] = misc[kMiscMaxL + tid];
  }
  __syncthreads();
  if (qk_active) {
    mrow[0] = misc[kMiscMax + qm * 16 + g];
    mrow[1] = misc[kMiscMax + qm * 16 + g + 8];
  }

  for (int v = sc.R; v < 2 * sc.R; ++v) step(v, true);

  // ---- denominators ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    dpart[r] += __shfl_xor_sync(0xffffffffu, dpart[r], 1);
    dpart[r] += __shfl_xor_sync(0xffffffffu, dpart[r], 2);
    if (qk_active && c == 0) misc[kMiscDenP + qh * 64 + qm * 16 + g + 8 * r] = dpart[r];
  }
  __syncthreads();
  if (tid < H) misc[kMiscDenL + tid] = misc[kMiscDenP + tid] + misc[kMiscDenP + 64 + tid];

  if (csize == 1) {
    if (tid < H) misc[kMiscDen + tid] = expf(a.sink[tid] - misc[kMiscMax + tid]) + misc[kMiscDenL + tid];
    __syncthreads();
    float* og = a.o + s * static_cast<int64_t>(H) * hd;
#pragma unroll
    for (int mb = 0; mb < 4; ++mb) {
      if (mb >= HB) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int h = mb * 16 + g + 8 * r;
        const float den = misc[kMiscDen + h];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          if (nt >= ntw) continue;
          const int d = warp * (hd / 8) + nt * 8 + 2 * c;
          float2 w;
          w.x = round_bf16(acc[mb][nt][2 * r] / den);
          w.y = round_bf16(acc[mb][nt][2 * r + 1] / den);
          *reinterpret_cast<float2*>(og + static_cast<int64_t>(h) * hd + d) = w;
        }
      }
    }
    return;
  }

  // ---- cluster: partial sums to shared memory (the key buffers, free now), added in rank order ----
  cg::cluster_group cl = cg::this_cluster();
  float* red = reinterpret_cast<float*>(kb);
  const int rstride = hd + 8;
#pragma unroll
  for (int mb = 0; mb < 4; ++mb) {
    if (mb >= HB) continue;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int h = mb * 16 + g + 8 * r;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt >= ntw) continue;
        const int d = warp * (hd / 8) + nt * 8 + 2 * c;
        *reinterpret_cast<float2*>(red + h * rstride + d) = make_float2(acc[mb][nt][2 * r], acc[mb][nt][2 * r + 1]);
      }
    }
  }
  cl.sync();
  if (tid < H) {
    float den = expf(a.sink[tid] - misc[kMiscMax + tid]);
    for (int q = 0; q < csize; ++q) den += cl.map_shared_rank(misc, q)[kMiscDenL + tid];
    misc[kMiscDen + tid] = den;
  }
  __syncthreads();
  {
    const int q4 = hd / 4, n4 = H * q4;
    const int e0 = static_cast<int>(static_cast<int64_t>(n4) * rank / csize);
    const int e1 = static_cast<int>(static_cast<int64_t>(n4) * (rank + 1) / csize);
    float4* og = reinterpret_cast<float4*>(a.o + s * static_cast<int64_t>(H) * hd);
    for (int e = e0 + tid; e < e1; e += kThreads) {
      const int h = e / q4, off = h * rstride + (e % q4) * 4;
      float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int q = 0; q < csize; ++q) {
        const float4 u = *reinterpret_cast<const float4*>(cl.map_shared_rank(red, q) + off);
        t.x += u.x;
        t.y += u.y;
        t.z += u.z;
        t.w += u.w;
      }
      const float den = misc[kMiscDen + h];
      og[e] = make_float4(round_bf16(t.x / den), round_bf16(t.y / den), round_bf16(t.z / den), round_bf16(t.w / den));
    }
  }
  cl.sync();  // no CTA leaves while another still reads its shared memory
}

// ============================ decode path ========================================================
// One CTA = 16 heads (head group blockIdx.y) × one run of the token's keys (cluster rank
// blockIdx.x of C) of token blockIdx.z. Keys per CTA ≤ kc (the host's bound, a multiple of 16),
// walked in tiles of ≤ 64.

constexpr int kDecHeads = 16;                                  // heads per CTA: the m16 rows
constexpr int kDecTile = 64;                                   // keys per tile
constexpr int kDecStageF4 = kDecTile * kMaxHd / 4 / kThreads;  // float4 per thread per tile (32)
static_assert(kDecStageF4 == (kDecTile / 8) * (kMaxHd / 128), "dec_load: 8 warps x 32 lanes x float4");
constexpr int kDecQF4 = kDecHeads * kMaxHd / 4 / kThreads;     // float4 per thread of Q (8)
constexpr int kDecMaxCluster = 16;                             // non-portable above 8
constexpr int kDecMaxKeys = 1024;                              // keys per CTA (pointer table, logits)
constexpr int kDecPtrPerThread = kDecMaxKeys / kThreads;       // 4
// misc floats: local max, global max, local denominator, total denominator (16 heads each).
constexpr int kDMaxL = 0, kDMax = 16, kDDenL = 32, kDDen = 48, kDMiscFloats = 64;

// QK split of a tile of np key pairs (16 keys = two 8-key n-tiles): nw warps along the pairs
// (warp wn takes pairs wn, wn + nw), kw = 8 / nw along hd (k-step slices added in slice order).
__host__ __device__ inline int dec_nw(int np) { return np >= 8 ? 8 : np >= 4 ? 4 : np >= 2 ? 2 : 1; }

struct DecLayout {
  int rs = 0, kc = 0, kt = 0, nbuf = 0, ps = 0;  // row bytes (Q, keys), keys per CTA, per tile, buffers, P row bytes
  size_t q = 0, k = 0, p = 0, part = 0, lg = 0, ptr = 0, misc = 0, total = 0;
};

__host__ __device__ inline DecLayout make_dec_layout(int hd, int kc) {
  DecLayout L;
  L.rs = 2 * hd + 16;
  L.kc = kc;
  L.kt = kc < kDecTile ? kc : kDecTile;
  L.nbuf = kc > kDecTile ? 2 : 1;
  L.ps = 2 * L.kt + 16;  // odd multiple of 16 bytes (kt is a multiple of 16): ldmatrix conflict-free
  size_t kbytes = static_cast<size_t>(L.nbuf) * L.kt * L.rs;
  const size_t red = static_cast<size_t>(kDecHeads) * (hd + 8) * sizeof(float);  // cluster partials
  if (kbytes < red) kbytes = red;
  size_t part = 0;
  for (int np = 1; np <= L.kt / 16; ++np) {
    const size_t b = static_cast<size_t>(8 / dec_nw(np)) * kDecHeads * (16 * np) * sizeof(float);
    if (b > part) part = b;
  }
  L.q = 0;
  L.k = L.q + static_cast<size_t>(kDecHeads) * L.rs;
  L.p = L.k + kbytes;
  L.part = L.p + static_cast<size_t>(kDecHeads) * L.ps;
  L.lg = L.part + part;
  L.ptr = L.lg + static_cast<size_t>(kDecHeads) * kc * sizeof(float);
  L.misc = L.ptr + static_cast<size_t>(kc) * sizeof(const float*);
  L.total = L.misc + kDMiscFloats * sizeof(float);
  return L;
}

// f32 staging registers of one tile gather (≤ 64 keys × hd ≤ 512).
struct DStage {
  float4 v[kDecStageF4];
};

// Keys [key0, key0 + nk) of the CTA's pointer table → registers (null row: zeros). Warp w takes
// keys w, w + 8, …, w + 56, each as ≤ 4 contiguous 512-byte pieces (one row pointer per key, fully
// coalesced loads, conflict-free shared stores).
template <int kHd>
__device__ __forceinline__ void dec_load(DStage& st, const float* const* ptr, int key0, int nk, int hd_rt) {
  const int hd = kHd ? kHd : hd_rt, q4 = hd / 4, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int kk = 0; kk < kDecTile / 8; ++kk) {
    const int key = warp + 8 * kk;
    const float4* r = key < nk ? reinterpret_cast<const float4*>(ptr[key0 + key]) : nullptr;
#pragma unroll
    for (int qq = 0; qq < kMaxHd / 128; ++qq) {
      const int c4 = qq * 32 + lane;
      st.v[kk * (kMaxHd / 128) + qq] = r && c4 < q4 ? __ldg(r + c4) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
}

template <int kHd>
__device__ __forceinline__ void dec_store(const DStage& st, uint8_t* kbuf, int rs, int nk, int hd_rt) {
  const int hd = kHd ? kHd : hd_rt, q4 = hd / 4, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int kk = 0; kk < kDecTile / 8; ++kk) {
    const int key = warp + 8 * kk;
    if (key >= nk) continue;
#pragma unroll
    for (int qq = 0; qq < kMaxHd / 128; ++qq) {
      const int c4 = qq * 32 + lane;
      if (c4 < q4) {
        const float4 v = st.v[kk * (kMaxHd / 128) + qq];
        uint2 w;
        w.x = pack_bf16(v.x, v.y);
        w.y = pack_bf16(v.z, v.w);
        *reinterpret_cast<uint2*>(kbuf + static_cast<size_t>(key) * rs + c4 * 8) = w;
      }
    }
  }
}

template <int kHd>
__global__ void __launch_bounds__(kThreads, 1)
    attention_decode_kernel(AttentionArgs a, double scale, int csize, int kc) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int hd = kHd ? kHd : a.hd;
  const DecLayout L = make_dec_layout(hd, kc);
  const int rs = L.rs, ps = L.ps;
  uint8_t* qs = smem + L.q;
  uint8_t* kb = smem + L.k;
  uint8_t* pb = smem + L.p;
  float* part = reinterpret_cast<float*>(smem + L.part);
  float* lg = reinterpret_cast<float*>(smem + L.lg);  // logits [16][kc]
  const float** ptr = reinterpret_cast<const float**>(smem + L.ptr);
  float* misc = reinterpret_cast<float*>(smem + L.misc);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
  const int rank = static_cast<int>(blockIdx.x), h0 = static_cast<int>(blockIdx.y) * kDecHeads;
  const int64_t s = blockIdx.z;
  const int64_t p = a.p0 + s;
  const bool csa = a.ratio == 4;
  const int32_t ns = csa ? a.n_sel[s] : 0;  // issued first: its latency overlaps Q and the ids

  // ---- the token's keys (sparse_attention_kernel's order: window, then compressed entries) ----
  // The split into runs uses nsplit = nwin + topk for CSA (not n_sel, so the ids can be read in the
  // same round trip as n_sel; ids at or past n_sel are null keys).
  const int64_t win_first = p - a.W + 1 > 0 ? p - a.W + 1 : 0;
  const int nwin = static_cast<int>(p - win_first + 1);
  int ncomp = 0, nsplit = nwin;
  if (csa) {
    nsplit += a.topk;
  } else if (a.ratio > 0) {
    const int64_t vis = (p + 1) / a.ratio;
    ncomp = static_cast<int>(vis < a.n_entries ? vis : a.n_entries);
    nsplit += ncomp;
  }
  const int G = (nsplit + 15) / 16;
  const int g0 = static_cast<int>(static_cast<int64_t>(G) * rank / csize);
  const int g1 = static_cast<int>(static_cast<int64_t>(G) * (rank + 1) / csize);
  const int k0 = 16 * g0, Kr = 16 * (g1 - g0);
  if (Kr > kc) __trap();  // the host's bound (decode_kc) is broken

  // ---- Q (16 heads) and the CSA ids in one round trip; Q is stored after the first gather is
  // issued, so that for window / HCA keys (no ids) its latency overlaps the gather's ----
  const int q4 = hd / 4;
  const float4* qg = reinterpret_cast<const float4*>(a.q + (s * a.H + h0) * static_cast<int64_t>(hd));
  float4 qv[kDecQF4];
#pragma unroll
  for (int i = 0; i < kDecQF4; ++i) {
    const int idx = i * kThreads + tid;
    qv[i] = idx < kDecHeads * q4 ? __ldg(qg + idx) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  int32_t ids[kDecPtrPerThread];
#pragma unroll
  for (int i = 0; i < kDecPtrPerThread; ++i) {
    const int j = tid + i * kThreads, J = k0 + j;
    ids[i] = -1;
    if (csa && j < Kr && J >= nwin && J - nwin < a.topk) ids[i] = __ldg(a.sel + s * a.topk + (J - nwin));
  }
  if (csa) ncomp = ns < 0 ? 0 : (ns > a.topk ? a.topk : ns);
#pragma unroll
  for (int i = 0; i < kDecPtrPerThread; ++i) {
    const int j = tid + i * kThreads, J = k0 + j;
    if (j < Kr) {
      const float* r = nullptr;
      if (J < nwin) {
        const int64_t pos = win_first + J;
        r = pos < a.p0 ? a.window + (pos % a.window_ring) * hd : a.kv + (pos - a.p0) * hd;
      } else if (J - nwin < ncomp) {
        const int64_t e = csa ? static_cast<int64_t>(ids[i]) : static_cast<int64_t>(J - nwin);
        if (e >= 0 && e < a.n_entries) r = a.entries + e * hd;  // an id outside: a skipped key
      }
      ptr[j] = r;
    }
  }
  __syncthreads();

  const int T = (Kr + kDecTile - 1) / kDecTile;
  auto tkeys = [&](int u) {
    const int r = Kr - u * kDecTile;
    return r < kDecTile ? r : kDecTile;
  };
  auto kbuf = [&](int u) { return kb + static_cast<size_t>(u & 1) * L.kt * rs; };

  const uint32_t qa = smem_u32(qs) + (lane & 15) * rs + (lane >> 4) * 16;
  const uint32_t kb_u = smem_u32(kb);
  const uint32_t bo = ((lane & 7) + ((lane >> 4) << 3)) * rs + ((lane >> 3) & 1) * 16;
  const uint32_t pa = smem_u32(pb) + (lane & 15) * ps + (lane >> 4) * 16;
  const int ntw = hd / 64;  // PV: warp w owns dims [w·hd/8, +hd/8)
  const uint32_t vo = ((lane & 7) + ((lane >> 3) & 1) * 8) * rs + (warp * (hd / 8) + (lane >> 4) * 8) * 2;

  // Logits of tile u → lg[h][u·64 + key] (−∞ for a null key), each computed once.
  auto qk = [&](int u) {
    const int nk = tkeys(u), np = nk / 16, nw = dec_nw(np), kw = 8 / nw, wn = warp % nw, wk = warp / nw;
    const int ks = hd / 16, kbeg = ks * wk / kw, kend = ks * (wk + 1) / kw;
    const uint32_t kcur = kb_u + static_cast<uint32_t>((u & 1) * L.kt * rs);
    float sacc[2][2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) sacc[i][j][k] = 0.f;
#pragma unroll 4
    for (int k16 = kbeg; k16 < kend; ++k16) {
      uint32_t af[4];
      ldsm_x4(qa + k16 * 32, af);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int pp = wn + i * nw;
        if (pp < np) {
          uint32_t b[4];
          ldsm_x4(kcur + bo + pp * 16 * rs + k16 * 32, b);
          mma_bf16(sacc[i][0], af, b[0], b[1]);
          mma_bf16(sacc[i][1], af, b[2], b[3]);
        }
      }
    }
    float* lrow = lg + u * kDecTile;
    const float* const* tptr = ptr + u * kDecTile;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int pp = wn + i * nw;
      if (pp >= np) continue;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = pp * 16 + nt * 8 + 2 * c + e;
          const bool ok = tptr[key] != nullptr;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int h = g + 8 * r;
            const float v = sacc[i][nt][2 * r + e];
            if (kw == 1)
              lrow[h * kc + key] = ok ? static_cast<float>(static_cast<double>(v) * scale) : -INFINITY;
            else
              part[(wk * kDecHeads + h) * nk + key] = v;
          }
        }
    }
    if (kw > 1) {
      __syncthreads();
      for (int e = tid; e < kDecHeads * nk; e += kThreads) {
        const int h = e / nk, key = e - h * nk;
        float sum = part[h * nk + key];
        for (int w = 1; w < kw; ++w) sum += part[(w * kDecHeads + h) * nk + key];
        lrow[h * kc + key] = tptr[key] ? static_cast<float>(static_cast<double>(sum) * scale) : -INFINITY;
      }
    }
  };

  // ---- pass 1: gather (next tile in flight during this one), logits ----
  DStage stg;
  if (T > 0) dec_load<kHd>(stg, ptr, 0, tkeys(0), hd);
#pragma unroll
  for (int i = 0; i < kDecQF4; ++i) {
    const int idx = i * kThreads + tid;
    if (idx < kDecHeads * q4) {
      uint2 w;
      w.x = pack_bf16(qv[i].x, qv[i].y);
      w.y = pack_bf16(qv[i].z, qv[i].w);
      *reinterpret_cast<uint2*>(qs + static_cast<size_t>(idx / q4) * rs + (idx % q4) * 8) = w;
    }
  }
  if (T > 0) dec_store<kHd>(stg, kbuf(0), rs, tkeys(0), hd);
  __syncthreads();
#pragma unroll 1
  for (int u = 0; u < T; ++u) {
    const bool pre = u + 1 < T;
    if (pre) dec_load<kHd>(stg, ptr, (u + 1) * kDecTile, tkeys(u + 1), hd);
    qk(u);
    if (pre) dec_store<kHd>(stg, kbuf(u + 1), rs, tkeys(u + 1), hd);
    __syncthreads();  // logits final; the next buffer written; the partials may be rewritten
  }

  // ---- the max over real keys, cluster-wide ----
  const int ph = tid >> 4, pj = tid & 15;  // row roles: head ph, keys pj, pj + 16, …
  {
    float mx = -INFINITY;
    for (int k = pj; k < Kr; k += 16) mx = fmaxf(mx, lg[ph * kc + k]);
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (pj == 0) misc[kDMaxL + ph] = mx;
  }
  if (csize > 1) {
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    if (tid < kDecHeads) {
      float mq[kDecMaxCluster];  // all remote loads in flight at once
#pragma unroll
      for (int q = 0; q < kDecMaxCluster; ++q)
        mq[q] = q < csize ? cl.map_shared_rank(misc, q)[kDMaxL + tid] : -INFINITY;
      float m = -INFINITY;
#pragma unroll
      for (int q = 0; q < kDecMaxCluster; ++q) m = fmaxf(m, mq[q]);
      misc[kDMax + tid] = m;
    }
  } else {
    __syncthreads();
    if (tid < kDecHeads) misc[kDMax + tid] = misc[kDMaxL + tid];
  }
  __syncthreads();
  const float mh = misc[kDMax + ph];

  // ---- pass 2 (tiles in reverse: the last two are resident): P from the stored logits, P·K ----
  float acc[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int k = 0; k < 4; ++k) acc[i][k] = 0.f;
  float dsum = 0.f;
#pragma unroll 1
  for (int v = 0; v < T; ++v) {
    const int u = T - 1 - v, nk = tkeys(u), un = T - 2 - v;
    const bool pre = un >= 0 && v >= 1;  // the next step's tile is not resident: gather it now
    if (pre) dec_load<kHd>(stg, ptr, un * kDecTile, tkeys(un), hd);
    for (int k = pj; k < nk; k += 16) {
      const float pv = expf(lg[ph * kc + u * kDecTile + k] - mh);
      dsum += pv;  // the denominator takes the unrounded p
      *reinterpret_cast<__nv_bfloat16*>(pb + ph * ps + k * 2) = __float2bfloat16_rn(pv);
    }
    __syncthreads();
    const uint32_t kcur = kb_u + static_cast<uint32_t>((u & 1) * L.kt * rs);
#pragma unroll 1
    for (int k16 = 0; k16 < nk / 16; ++k16) {
      uint32_t af[4];
      ldsm_x4(pa + k16 * 32, af);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        if (2 * np < ntw) {
          uint32_t bf[4];
          ldsm_x4_t(kcur + vo + k16 * 16 * rs + np * 32, bf);
          mma_bf16(acc[2 * np], af, bf[0], bf[1]);
          if (2 * np + 1 < ntw) mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
        }
      }
    }
    if (pre) dec_store<kHd>(stg, kbuf(un), rs, tkeys(un), hd);
    __syncthreads();  // P and this buffer are rewritten next
  }
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
  if (pj == 0) misc[kDDenL + ph] = dsum;

  if (csize == 1) {
    __syncthreads();
    if (tid < kDecHeads) misc[kDDen + tid] = expf(a.sink[h0 + tid] - misc[kDMax + tid]) + misc[kDDenL + tid];
    __syncthreads();
    float* og = a.o + (s * a.H + h0) * static_cast<int64_t>(hd);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int h = g + 8 * r;
      const float den = misc[kDDen + h];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt >= ntw) continue;
        const int d = warp * (hd / 8) + nt * 8 + 2 * c;
        float2 w;
        w.x = round_bf16(acc[nt][2 * r] / den);
        w.y = round_bf16(acc[nt][2 * r + 1] / den);
        *reinterpret_cast<float2*>(og + static_cast<int64_t>(h) * hd + d) = w;
      }
    }
    return;
  }

  // ---- cluster: partial sums (in the key buffers, free now) added in rank order ----
  cg::cluster_group cl = cg::this_cluster();
  float* red = reinterpret_cast<float*>(kb);
  const int rstride = hd + 8;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = g + 8 * r;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      if (nt >= ntw) continue;
      const int d = warp * (hd / 8) + nt * 8 + 2 * c;
      *reinterpret_cast<float2*>(red + h * rstride + d) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
    }
  }
  cl.sync();
  if (tid < kDecHeads) {
    float dq[kDecMaxCluster];
#pragma unroll
    for (int q = 0; q < kDecMaxCluster; ++q) dq[q] = q < csize ? cl.map_shared_rank(misc, q)[kDDenL + tid] : 0.f;
    float den = expf(a.sink[h0 + tid] - misc[kDMax + tid]);
#pragma unroll
    for (int q = 0; q < kDecMaxCluster; ++q)
      if (q < csize) den += dq[q];  // rank order
    misc[kDDen + tid] = den;
  }
  __syncthreads();
  {
    const int n4 = kDecHeads * q4;
    const int e0 = static_cast<int>(static_cast<int64_t>(n4) * rank / csize);
    const int e1 = static_cast<int>(static_cast<int64_t>(n4) * (rank + 1) / csize);
    float4* og = reinterpret_cast<float4*>(a.o + (s * a.H + h0) * static_cast<int64_t>(hd));
    for (int e = e0 + tid; e < e1; e += kThreads) {
      const int h = e / q4, off = h * rstride + (e % q4) * 4;
      float4 u[kDecMaxCluster];
#pragma unroll
      for (int q = 0; q < kDecMaxCluster; ++q)  // all loads in flight, then the sum in rank order
        if (q < csize) u[q] = *reinterpret_cast<const float4*>(cl.map_shared_rank(red, q) + off);
      float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int q = 0; q < kDecMaxCluster; ++q)
        if (q < csize) {
          t.x += u[q].x;
          t.y += u[q].y;
          t.z += u[q].z;
          t.w += u[q].w;
        }
      const float den = misc[kDDen + h];
      og[e] = make_float4(round_bf16(t.x / den), round_bf16(t.y / den), round_bf16(t.z / den), round_bf16(t.w / den));
    }
  }
  cl.sync();  // no CTA leaves while another still reads its shared memory
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- host side ----

// Rough per-CTA critical-path models (ns) of the two paths, for the automatic choice only (results
// do not depend on it beyond the f32 summation order). The token kernel gathers 32 KB per round
// trip and computes QK twice for 64 heads; the decode kernel gathers a 64-key tile per round trip
// and computes QK once for 16 heads, but re-reads the keys once per head group.
constexpr double kTokBytesPerNs = 40.0, kDecBytesPerNs = 100.0;  // gather rate per CTA
constexpr double kTokMacPerNs = 1500.0, kDecMacPerNs = 1000.0;   // mma.sync rate per CTA
constexpr double kClusterSyncNs = 500.0;

double est_token_ns(const AttentionArgs& a, int64_t max_tiles, int64_t cs, int sms) {
  const int64_t tiles = (max_tiles + cs - 1) / cs, gathers = tiles + (tiles > 2 ? tiles - 2 : 0);
  const int64_t waves = (a.S * cs + sms - 1) / sms;
  const double bytes = 4.0 * a.H * a.hd + 4.0 * gathers * kTile * a.hd;
  const double macs = 3.0 * tiles * a.H * kTile * a.hd;
  return static_cast<double>(waves) *
         (bytes / kTokBytesPerNs + macs / kTokMacPerNs + (cs > 1 ? 2 * kClusterSyncNs : 0.0));
}

double est_decode_ns(const AttentionArgs& a, int C, int kc, int sms) {
  const int64_t tiles = (kc + kDecTile - 1) / kDecTile;
  const int64_t keys = kc + (tiles > 2 ? (tiles - 2) * kDecTile : 0);
  const int64_t waves = (a.S * (a.H / kDecHeads) * C + sms - 1) / sms;
  const double bytes = 4.0 * kDecHeads * a.hd + 4.0 * keys * a.hd;
  const double macs = 2.0 * kDecHeads * kc * a.hd;
  return static_cast<double>(waves) *
         (bytes / kDecBytesPerNs + macs / kDecMacPerNs + (C > 1 ? 3 * kClusterSyncNs : 0.0));
}

// Keys per CTA of the decode kernel for cluster size C (0: does not fit in shared memory).
int decode_kc(const AttentionArgs& a, int64_t max_keys, int C, int optin) {
  const int64_t G = (max_keys + 15) / 16;
  const int64_t kc = (G + C - 1) / C * 16;
  if (kc > kDecMaxKeys) return 0;
  const DecLayout L = make_dec_layout(a.hd, static_cast<int>(kc));
  return L.total <= static_cast<size_t>(optin) ? static_cast<int>(kc) : 0;
}

// One decode launch at cluster size C. need_resident: the clusters that must fit at once for a
// cluster size above 8 (checked with the occupancy API; portable sizes are not checked).
cudaError_t launch_decode(const AttentionArgs& k, double scale, int C, int kc, int64_t need_resident,
                          cudaStream_t stream) {
  const DecLayout L = make_dec_layout(k.hd, kc);
  auto kern = k.hd == kMaxHd ? attention_decode_kernel<kMaxHd> : attention_decode_kernel<0>;
  if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total)) !=
      cudaSuccess) {
    (void)cudaGetLastError();
    return cudaErrorNotSupported;
  }
  if (C > 8 && cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    (void)cudaGetLastError();
    return cudaErrorNotSupported;
  }
  if (k.S > 65535) return cudaErrorNotSupported;  // grid.z
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(C), static_cast<unsigned>(k.H / kDecHeads), static_cast<unsigned>(k.S));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = L.total;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(C);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = C > 1 ? 1 : 0;
  if (C > 8) {
    int nclusters = 0;
    if (cudaOccupancyMaxActiveClusters(&nclusters, kern, &cfg) != cudaSuccess || nclusters < need_resident ||
        nclusters < 1) {
      (void)cudaGetLastError();
      return cudaErrorNotSupported;
    }
  }
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kern, k, scale, C, kc);
  if (e != cudaSuccess) (void)cudaGetLastError();
  return e;
}

// The token kernel (one CTA per token, a cluster of cs ≤ 8 over its tiles), as before.
cudaError_t launch_token(const AttentionArgs& k, double scale, int64_t cs, cudaStream_t stream) {
  const Layout L = make_layout(k.H, k.hd, k.W, k.topk);
  const bool fast = k.H == 64 && k.hd == 512;
  auto kern = fast ? attention_mma_kernel<true> : attention_mma_kernel<false>;
  if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total)) !=
      cudaSuccess)
    return cudaErrorNotSupported;
  if (k.S * cs > 0x7fffffffLL) return cudaErrorNotSupported;
  for (;;) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(k.S * cs));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = L.total;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(cs);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = cs > 1 ? 1 : 0;
    if (cs > 1) {
      int nclusters = 0;
      if (cudaOccupancyMaxActiveClusters(&nclusters, kern, &cfg) != cudaSuccess || nclusters < 1) {
        (void)cudaGetLastError();
        cs = 1;
        continue;
      }
    }
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kern, k, scale, static_cast<int>(cs));
    if (e == cudaSuccess || cs == 1) return e;
    (void)cudaGetLastError();  // a cluster that cannot be placed: one CTA per token instead
    cs = 1;
  }
}

// path: 0 automatic, 1 the token kernel only, 2 the decode kernel only (cluster: 0 automatic, else
// that size, 1…16; cudaErrorNotSupported when it cannot be used).
cudaError_t attention_mma_launch(const AttentionArgs& a, int path, int cluster, cudaStream_t stream) {
  // What this kernel takes; anything else goes to sparse_attention's own kernel.
  if (!a.official) return cudaErrorNotSupported;
  if (a.H <= 0 || a.H % 16 != 0 || a.H > kMaxH) return cudaErrorNotSupported;
  if (a.hd <= 0 || a.hd % 64 != 0 || a.hd > kMaxHd) return cudaErrorNotSupported;
  if (a.S < 0 || a.p0 < 0 || a.W <= 0 || a.ratio < 0 || a.topk < 0 || a.n_entries < 0) return cudaErrorInvalidValue;
  if (a.S == 0) return cudaSuccess;
  if (!a.q || !a.kv || !a.sink || !a.o) return cudaErrorInvalidValue;
  if (a.p0 > 0 && (!a.window || a.window_ring < 1 || a.window_ring < a.W - 1)) return cudaErrorInvalidValue;
  if (a.ratio > 0 && a.n_entries > 0 && !a.entries) return cudaErrorInvalidValue;
  if (a.ratio == 4 && (!a.n_sel || (a.topk > 0 && !a.sel))) return cudaErrorInvalidValue;
  if (a.n_entries > (int64_t{1} << 30) || a.W > 4096 || a.topk > 8192) return cudaErrorNotSupported;
  if (!aligned16(a.q) || !aligned16(a.kv) || !aligned16(a.window) || !aligned16(a.entries) || !aligned16(a.o))
    return cudaErrorNotSupported;
  if (path < 0 || path > 2 || cluster < 0 || cluster > kDecMaxCluster) return cudaErrorInvalidValue;
  const int topk_smem = a.ratio == 4 ? a.topk : 0;
  const Layout L = make_layout(a.H, a.hd, a.W, topk_smem);
  int dev = 0, optin = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return cudaErrorNotSupported;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return cudaErrorNotSupported;
  const bool token_fits = L.total <= static_cast<size_t>(optin);

  // The most keys a token sees (the key-split bound of both kernels).
  int64_t max_keys = a.W;
  if (a.ratio == 4) max_keys += a.topk;
  else if (a.ratio > 0) {
    const int64_t vis = (a.p0 + a.S) / a.ratio;
    max_keys += vis < a.n_entries ? vis : a.n_entries;
  }
  const int64_t max_tiles = (max_keys + kTile - 1) / kTile;
  // Token kernel's cluster size: split a token's tiles over several SMs while the tokens alone
  // leave SMs idle.
  int64_t cs = a.S >= sms ? 1 : sms / a.S;
  if (cs > kMaxCluster) cs = kMaxCluster;
  if (cs > max_tiles) cs = max_tiles;
  if (cs < 1) cs = 1;

  AttentionArgs k = a;
  if (a.ratio != 4) k.topk = 0;  // the layouts and kernels read topk for CSA only
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.hd));  // as attention.cpp
  const int64_t HG = a.H / kDecHeads;

  // Decode kernel's cluster size: as many CTAs per (token, head group) as one wave allows, at
  // least 16 keys each, at most 16.
  const int64_t G = (max_keys + 15) / 16;
  int64_t c0 = sms / (a.S * HG);
  if (c0 > kDecMaxCluster) c0 = kDecMaxCluster;
  if (c0 > G) c0 = G;
  if (c0 < 1) c0 = 1;

  if (path == 2) {
    const int C = cluster ? cluster : static_cast<int>(c0);
    const int kc = decode_kc(k, max_keys, C, optin);
    if (kc == 0) return cudaErrorNotSupported;
    return launch_decode(k, scale, C, kc, 1, stream);
  }

  if (path == 0 && a.S * HG * 2 <= sms) {
    // Decode when the model says it is faster; a cluster of 16 needs all S·HG clusters resident
    // at once, else 8 (portable) is tried.
    for (int C = static_cast<int>(c0); C >= 2; C = C > 8 ? 8 : 0) {
      const int kc = decode_kc(k, max_keys, C, optin);
      if (kc == 0) break;
      if (token_fits && est_decode_ns(a, C, kc, sms) >= est_token_ns(a, max_tiles, cs, sms)) break;
      const cudaError_t e = launch_decode(k, scale, C, kc, a.S * HG, stream);
      if (e == cudaSuccess) return e;
      // not placeable at this size: try 8, then the token kernel
    }
  }
  if (!token_fits) return cudaErrorNotSupported;
  return launch_token(k, scale, cs, stream);
}

}  // namespace

// Test and benchmark hook (declared by tests/gpu/test_attention_mma.cpp and
// benchmarks/bench_attention.cu, not part of kernels.hpp's contract): sparse_attention_mma with the
// path forced — 0 automatic (= sparse_attention_mma), 1 the one-CTA-per-token kernel (the path
// before the decode kernel), 2 the decode kernel at cluster size `cluster` (0 = automatic, else
// 1…16). Returns cudaErrorNotSupported where the forced path cannot run that shape.
cudaError_t sparse_attention_mma_variant(const AttentionArgs& a, int path, int cluster, cudaStream_t stream);
cudaError_t sparse_attention_mma_variant(const AttentionArgs& a, int path, int cluster, cudaStream_t stream) {
  return attention_mma_launch(a, path, cluster, stream);
}

cudaError_t sparse_attention_mma(const AttentionArgs& a, cudaStream_t stream) {
  return attention_mma_launch(a, 0, 0, stream);
}

}  // namespace dsv4::cuda
