// Shared engine of the decode GEMV kernels (sm90_fp8_gemv.cu, sm90_fp4_moe.cu): one persistent CTA
// per SM streams a contiguous, byte-balanced range of weight tiles through a bulk-copy ring (one
// producer warp, 8 consumer warps = 8 x 16 rows), tokens sit on the N side of mma.sync m16n8k32
// e4m3. Units (row tile x expert chunk) split across CTAs are reduced deterministically: the CTA
// holding a unit's first tile is its reducer; the others write their partial to their own slot and
// signal without waiting; the reducer adds the slots in CTA order (docs/kernels.md).
// Invariants: counters return to zero at exit; every output element is written exactly once.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "dsv4/cuda/gemv_layout.hpp"
#include "dsv4/dtypes.hpp"
#include "func_attr.hpp"

// Returns the error of a CUDA call from the enclosing launcher (no exceptions, no fmt in kernels).
#define DSV4_GEMV_TRY(expr)                       \
  do {                                            \
    const cudaError_t gemv_err_ = (expr);         \
    if (gemv_err_ != cudaSuccess) return gemv_err_; \
  } while (0)

namespace dsv4::cuda::gemv_detail {

enum Kind : int { kFp8 = 0, kFp4W13 = 1, kFp4W2 = 2 };
constexpr int kWarps = 8;  // consumer warps; warp w owns rows w*16..w*16+15 of every tile
constexpr int kThreads = (kWarps + 1) * 32;
constexpr int kMaxPairs = 128;       // m * top_k <= 16 * 6 = 96
constexpr int kMaxTokensCap = 16;    // = kGemvMaxTokens (gemv.hpp; checked in the launchers)
constexpr int kMaxStages = 8;
constexpr int kRawBytesMax = 32768;  // bf16 staging for the in-kernel activation quantisation
constexpr int kFixedSmem = 9216;     // barriers, routing tables / FP8 scales, amax, contributors

constexpr int kMaxSw = 1024;         // FP8 tile scales staged per CTA (routing area, FP8 only)

template <int K> struct Traits;
template <> struct Traits<kFp8> {
  static constexpr int kMats = 1, kKs = 4, kTileBytes = kFp8TileBytes;
  static constexpr bool kFp4 = false;
};
template <> struct Traits<kFp4W13> {
  static constexpr int kMats = 2, kKs = kFp4W13Ks, kTileBytes = kFp4TileBytes;
  static constexpr bool kFp4 = true;
};
template <> struct Traits<kFp4W2> {
  static constexpr int kMats = 1, kKs = kFp4W2Ks, kTileBytes = kFp4TileBytes;
  static constexpr bool kFp4 = true;
};

struct Params {
  const uint8_t* w;        // tiled weights (FP4: expert 0; expert e at w + e * expert_stride)
  const uint8_t* w_scale;  // FP8: e8m0 [nt, kt]
  int64_t expert_stride;
  int num_experts;
  int n, k, nt, kt;        // rows and inputs of one matrix, tile counts
  const uint16_t* x;       // bf16 [m, k] (FP8, w13)
  int m, top_k;
  const uint8_t* hq_in;    // w2 input: e4m3 [m*top_k, hq_stride]
  const float* hs_in;      // w2 input scales [m*top_k, hq_stride/128]
  int hq_stride, hq_valid; // hq_valid = inputs written by w13 (multiple of 128)
  const int32_t* ids;
  const float* topw;
  uint16_t* y;             // FP8 / w2 output bf16 [m, n]
  uint8_t* hq_out;         // w13 outputs
  float* hs_out;
  uint32_t* cnt1;          // per unit arrival counters
  uint32_t* cnt2;          // per row tile (w2 expert sum)
  float* partials;         // [grid][2][kWarps][regs][32]
  float* ypair;            // w2: f32(bf16(y_slot)) [m*top_k, nt*128]
  int grid, stages, nwin_max, raw_bytes;
};

struct Layout {
  int bars, routing, amax, ring, raw, xs, sxs, xs_stride, total;
};
__host__ __device__ inline Layout make_layout(int kind, int m, int stages, int nwin_max,
                                              int raw_bytes, int tile_bytes) {
  Layout l{};
  const int rows = kind == kFp4W2 ? 0 : m;
  l.bars = 0;                 // 2*kMaxStages + 2 mbarriers
  l.routing = 256;            // Routing struct (< 4 KB)
  l.amax = 7168;              // kWarps x 16 floats
  l.ring = kFixedSmem;
  l.raw = l.ring + stages * tile_bytes;
  l.xs = l.raw + (rows ? raw_bytes : 0);
  l.xs_stride = nwin_max * 128 + 16;  // +16 B: the 8 token rows of a B fragment hit distinct banks
  l.sxs = l.xs + rows * l.xs_stride;
  l.total = l.sxs + rows * nwin_max * 4;
  return l;
}

struct Routing {
  int nchunks, nvalid;
  int key[kMaxPairs];
  int expert[kMaxPairs];      // by pair id (t*top_k + j)
  float weight[kMaxPairs];    // by pair id
  int sorted[kMaxPairs];      // pair ids sorted by (expert, pair id), valid ones first
  int first_of_expert[kMaxPairs];  // by sorted position
  int chunk_first[kMaxPairs], chunk_count[kMaxPairs], chunk_expert[kMaxPairs];
  int tok_order[16][8];       // a token's valid pairs in ascending expert id
  int tok_count[16];
};
static_assert(sizeof(Routing) <= 7168 - 256, "routing tables overflow their smem slot");

// ---- PTX wrappers ----------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t a = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
// Weights are read once per token: evict-first keeps activations and partials in L2.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                          uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1], %2, [%3], %4;" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void bulk_load_plain(void* dst, const void* src, uint32_t bytes,
                                                uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
// One warp's ring of `depth` shared-memory slots of `slot_bytes`, one mbarrier per slot (the ring
// kernels): lane 0 fills slots in order with one bulk copy each (init, issue); every lane waits for
// the oldest slot (wait), reads it, and moves on (next); lane 0 may refill a slot once the warp has
// passed a __syncwarp after reading it.
struct WarpRing {
  uint64_t* bar;
  uint8_t* base;
  int slot_bytes, depth;
  int islot = 0, cslot = 0;
  uint32_t cphase = 0;
  uint64_t pol = 0;
  __device__ WarpRing(uint64_t* b, uint8_t* s, int bytes, int d) : bar(b), base(s), slot_bytes(bytes), depth(d) {}
  __device__ void init() {  // lane 0
    for (int i = 0; i < depth; ++i) mbar_init(bar + i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    pol = evict_first_policy();
  }
  __device__ void issue(const void* src) {  // lane 0
    mbar_expect_tx(bar + islot, static_cast<uint32_t>(slot_bytes));
    bulk_load(base + islot * slot_bytes, src, static_cast<uint32_t>(slot_bytes), bar + islot, pol);
    if (++islot == depth) islot = 0;
  }
  __device__ const uint8_t* wait() const {
    mbar_wait(bar + cslot, cphase);
    return base + cslot * slot_bytes;
  }
  __device__ void next() {
    if (++cslot == depth) {
      cslot = 0;
      cphase ^= 1u;
    }
  }
};

// Counter arrival with release (publishes the CTA's partial stores, which the preceding barrier
// made visible to this thread; release is cumulative) and acquire (the last arriver then reads the
// other CTAs' partials). Cheaper than two full __threadfence() (fence.sc) around a relaxed atomic.
__device__ __forceinline__ uint32_t arrive_acq_rel(uint32_t* counter) {
  uint32_t old;
  asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
  return old;
}
// Contributor arrival: release (publishes the CTA's partial stores, made visible to this thread by
// the preceding barrier; release is cumulative), fire-and-forget: the CTA does not wait for it.
__device__ __forceinline__ void arrive_release(uint32_t* counter) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
}
__device__ __forceinline__ uint32_t load_acquire(const uint32_t* counter) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
  return v;
}
__device__ __forceinline__ int32_t load_relaxed(const int32_t* p) {
  int32_t v;
  asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kWarps * 32) : "memory");
}
__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7},"
      " {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Two floats -> two e4m3 bytes (RNE, satfinite), `lo` in the low byte.
__device__ __forceinline__ uint32_t cvt_e4m3x2(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}
// Activation quantisation of one 1×128 block held as 16 values by each of 8 consecutive lanes
// (spec §5.1). block_amax8: the block's |max| on every lane of the group (all lanes must call it).
// quantize16_e4m3: the block's e8m0 scale code; `packed` = the lane's 16 values / scale as e4m3.
__device__ __forceinline__ float block_amax8(float amax) {
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  return fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 4));
}
__device__ __forceinline__ uint32_t quantize16_e4m3(const float (&v)[16], float block_amax, uint4& packed) {
  const uint32_t e = fp8_act_scale_e8m0(block_amax);
  const float inv = __uint_as_float((254u - e) << 23);  // 2^(127-e), exact
  uint32_t o[4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
    o[j] = cvt_e4m3x2(v[4 * j] * inv, v[4 * j + 1] * inv) | (cvt_e4m3x2(v[4 * j + 2] * inv, v[4 * j + 3] * inv) << 16);
  packed = make_uint4(o[0], o[1], o[2], o[3]);
  return e;
}
// Programmatic dependent launch (PDL). A kernel launched with launch_ex(pdl = true) may start
// while the previous kernel in the stream is still running: it may read only data no earlier
// kernel of the stream writes (its weights) before pdl_wait(), which returns once the previous
// kernel has completed and its writes are visible. Every thread calls pdl_wait() before its first
// read of an input or write of an output or workspace. pdl_trigger() lets the next PDL launch be
// scheduled; its CTAs start as SM resources free up. Both are no-ops without PDL.
// Kernels trigger right after their wait (then the launch after next starts only once this one's
// predecessor has completed), except where triggering first measured faster (the FP8 ring kernel
// when its grid covers every SM: there the launch after next takes the SM slots this kernel's
// predecessor frees and prefetches while this one waits and stages x; docs/kernels.md has the
// numbers). Triggering first is safe for every reader that waits before touching inputs; it is not
// for a launch that reads routing ids before its wait (moe w2 ids_early): w1|w3 must keep
// triggering after its wait.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

// e4m3 placement of 4 FP4 codes: low nibbles (lo) or high nibbles (hi) of each byte. Sign to bit 7,
// exponent+mantissa to bits 4..2: the e4m3 byte equals the e2m1 value x 2^-6 (0.5 -> subnormal).
__device__ __forceinline__ uint32_t fp4_lo_to_e4m3(uint32_t w) {
  return ((w << 4) & 0x80808080u) | ((w << 2) & 0x1c1c1c1cu);
}
__device__ __forceinline__ uint32_t fp4_hi_to_e4m3(uint32_t w) {
  return (w & 0x80808080u) | ((w >> 2) & 0x1c1c1c1cu);
}
// The MoE activation of one slot (spec §3.6) from the f32 sums of w1 (g) and w3 (u), before its
// final bf16 rounding: h = bf16(w * silu(min(bf16(g), 10)) * clamp(bf16(u), -10, 10)).
__device__ __forceinline__ float swiglu_weighted(float g_sum, float u_sum, float weight) {
  const float gv = fminf(round_bf16(g_sum), 10.f);
  const float uv = fminf(fmaxf(round_bf16(u_sum), -10.f), 10.f);
  const float silu = gv / (1.f + expf(-gv));
  return weight * (silu * uv);
}
// e8m0 byte b (1..254) -> 2^(b-127) in one shift (b = 0 would give 0 instead of 2^-127).
__device__ __forceinline__ float e8m0_fast(uint32_t b) { return __uint_as_float(b << 23); }

// floor(num / den) for 0 <= num < 2^52, den > 0: an fp64 quotient corrected by one step. The
// emulated 64-bit integer division costs hundreds of cycles and sat on the reduction's critical path.
__device__ __forceinline__ int64_t floordiv(int64_t num, int64_t den) {
  int64_t q = static_cast<int64_t>(static_cast<double>(num) / static_cast<double>(den));
  if ((q + 1) * den <= num) ++q;
  else if (q * den > num) --q;
  return q;
}
__device__ __forceinline__ int64_t tile_start(int c, int64_t T, int G) {
  return floordiv(static_cast<int64_t>(c) * T, G);
}
// The CTA whose range [tile_start(c), tile_start(c+1)) holds tile t.
__device__ __forceinline__ int cta_of(int64_t t, int64_t T, int G) {
  return static_cast<int>(floordiv((t + 1) * G - 1, T));
}

// ---- routing (FP4): sort the m*top_k slots by expert, cut into chunks of <= NCOL columns --------
template <int NCOL>
__device__ void build_routing(const Params& p, Routing* rt) {
  const int P = p.m * p.top_k;
  const int tid = threadIdx.x;
  bool valid = false;
  if (tid < P) {
    // Coherent loads (not the read-only path): the ids may have been written by a kernel that
    // finished while this one was already resident (PDL, see the ring w2 kernel's ids_early).
    const int e = load_relaxed(p.ids + tid);
    valid = e >= 0 && e < p.num_experts;
    rt->expert[tid] = valid ? e : -1;
    rt->key[tid] = valid ? e * kMaxPairs + tid : 0x7fff0000 + tid;
    rt->weight[tid] = p.topw ? __int_as_float(load_relaxed(reinterpret_cast<const int32_t*>(p.topw) + tid)) : 0.f;
  }
  const int nvalid = __syncthreads_count(valid);
  if (tid < P) {
    const int key = rt->key[tid], tok = tid / p.top_k;
    int rank = 0, first = 0, trank = 0;
    for (int j = 0; j < P; ++j) {
      const int kj = rt->key[j];
      rank += kj < key;
      first += (kj >> 7) < (key >> 7);  // pairs of smaller experts (invalid keys sort last)
      trank += (j / p.top_k == tok) && kj < key;
    }
    rt->sorted[rank] = tid;
    rt->first_of_expert[rank] = first;
    if (valid) rt->tok_order[tok][trank] = tid;
  }
  if (tid < p.m) {
    int c = 0;
    for (int j = 0; j < p.top_k; ++j) {
      const int e = load_relaxed(p.ids + tid * p.top_k + j);
      c += e >= 0 && e < p.num_experts;
    }
    rt->tok_count[tid] = c;
  }
  __syncthreads();
  if (tid == 0) {
    int nc = 0;
    for (int r = 0; r < nvalid; ++r) {
      if ((r - rt->first_of_expert[r]) % NCOL == 0) {
        rt->chunk_first[nc] = r;
        rt->chunk_count[nc] = 0;
        rt->chunk_expert[nc] = rt->expert[rt->sorted[r]];
        ++nc;
      }
      ++rt->chunk_count[nc - 1];
    }
    rt->nchunks = nc;
    rt->nvalid = nvalid;
  }
  __syncthreads();
}

// CTAs per SM the kernel is compiled for: two for 8-token tiles (more warps to hide the decode and
// MMA latency; fits the 112-register cap), one for 16-token tiles (their accumulators need more).
template <int NH> constexpr int occupancy() { return NH == 1 ? 2 : 1; }

// ---- the kernel -------------------------------------------------------------------------------
template <int KIND, int NH>
__global__ void __launch_bounds__(kThreads, occupancy<NH>()) gemv_kernel(const __grid_constant__ Params p) {
  using Tr = Traits<KIND>;
  constexpr int kMats = Tr::kMats, kKs = Tr::kKs, kTB = Tr::kTileBytes, kNcol = 8 * NH;
  constexpr int kRegs = kMats * NH * 4;
  extern __shared__ __align__(128) uint8_t smem[];
  const Layout L = make_layout(KIND, p.m, p.stages, p.nwin_max, p.raw_bytes, kTB);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L.bars);
  uint64_t* empty = full + kMaxStages;
  uint64_t* xfull = full + 2 * kMaxStages;
  uint64_t* xfree = xfull + 1;
  uint64_t* rdone = xfree + 1;  // the producer saw every contributor of this CTA's reduced unit
  Routing* rt = reinterpret_cast<Routing*>(smem + L.routing);
  float* s_amax = reinterpret_cast<float*>(smem + L.amax);
  float* s_sw = reinterpret_cast<float*>(smem + L.routing);  // FP8 only (no routing tables)
  __shared__ int s_flag;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int S = p.stages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, kWarps);
    }
    mbar_init(xfull, 1);
    mbar_init(xfree, kWarps);
    mbar_init(rdone, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if constexpr (Tr::kFp4) {
    pdl_wait();  // the routing reads ids, which the previous kernel may have written
    pdl_trigger();
    build_routing<kNcol>(p, rt);  // contains __syncthreads
  } else {
    __syncthreads();
  }

  const int nchunks = Tr::kFp4 ? rt->nchunks : 1;
  const int KT = p.kt, NT = p.nt;
  const int64_t T = static_cast<int64_t>(nchunks) * NT * KT;
  const int G = p.grid;
  if (KIND == kFp4W2 && nchunks == 0) {  // nothing routed: the output is zero
    if (blockIdx.x == 0)
      for (int i = threadIdx.x; i < p.m * p.n; i += blockDim.x) p.y[i] = 0;
    return;
  }
  const int64_t t0 = tile_start(blockIdx.x, T, G), t1 = tile_start(blockIdx.x + 1, T, G);
  const int n_tiles = static_cast<int>(t1 - t0);
  if (n_tiles <= 0) return;
  // Activation window: the k-tiles this CTA visits (all of them once its range spans a unit).
  const int kt_first = n_tiles >= KT ? 0 : static_cast<int>(t0 - floordiv(t0, KT) * KT);
  const int nwin = n_tiles >= KT ? KT : n_tiles;
  const int xrows = KIND == kFp4W2 ? 0 : p.m;
  const int segs = xrows * nwin, seg_per_batch = p.raw_bytes / 256;
  const int nbatch = xrows ? (segs + seg_per_batch - 1) / seg_per_batch : 0;
  uint8_t* ring = smem + L.ring;

  if (warp == kWarps) {
    // ===== producer =====
    if (lane != 0) return;
    const uint64_t pol = evict_first_policy();
    auto issue_x = [&](int b) {
      const int q0 = b * seg_per_batch, q1 = min(segs, q0 + seg_per_batch);
      uint32_t bytes = 0;
      for (int q = q0; q < q1; ++q) {
        const int kt = (kt_first + q % nwin) % KT;
        bytes += min(128, p.k - kt * 128) * 2;
      }
      mbar_expect_tx(xfull, bytes);
      for (int q = q0; q < q1; ++q) {
        const int r = q / nwin, kt = (kt_first + q % nwin) % KT;
        bulk_load_plain(smem + L.raw + (q - q0) * 256,
                        p.x + static_cast<int64_t>(r) * p.k + kt * 128,
                        min(128, p.k - kt * 128) * 2, xfull);
      }
    };
    auto issue_w = [&](int i) {
      const int64_t t = t0 + i;
      const uint8_t* src;
      const int s = i % S;
      mbar_expect_tx(full + s, kTB);
      if constexpr (Tr::kFp4) {
        // The tile's 8 row-group pieces are KT pieces apart (piece-major layout): 8 copies.
        const int64_t unit = floordiv(t, KT);
        const int c = static_cast<int>(floordiv(unit, NT));
        const int64_t nt = unit - static_cast<int64_t>(c) * NT, kt = t - unit * KT;
        src = p.w + rt->chunk_expert[c] * p.expert_stride + (nt * 8 * KT + kt) * kFp4PieceBytes;
        for (int rg = 0; rg < 8; ++rg)
          bulk_load(ring + s * kTB + rg * kFp4PieceBytes, src + static_cast<int64_t>(rg) * KT * kFp4PieceBytes,
                    kFp4PieceBytes, full + s, pol);
      } else {
        src = p.w + t * kTB;
        bulk_load(ring + s * kTB, src, kTB, full + s, pol);
      }
    };
    // Weights first: for FP8 they do not depend on the previous kernel (PDL overlap).
    const int first = min(S, n_tiles);
    for (int i = 0; i < first; ++i) issue_w(i);
    if constexpr (!Tr::kFp4) {
      pdl_wait();
      pdl_trigger();
    }
    if (nbatch > 0) issue_x(0);
    for (int b = 1; b < nbatch; ++b) {
      mbar_wait(xfree, (b - 1) & 1);
      issue_x(b);
    }
    for (int i = first; i < n_tiles; ++i) {
      mbar_wait(empty + i % S, ((i / S) - 1) & 1);
      issue_w(i);
    }
    // Split unit reduced here (this CTA holds the unit's first tile, so the unit is its last):
    // wait for the other contributors while the consumers still work on the last tiles, so the
    // counter round trip is off the critical path. Contributors never wait, and a CTA only waits
    // for higher-numbered CTAs, which are dispatched no later (all CTAs are co-resident in every
    // plan that does not need activation waves).
    const int64_t ul = floordiv(t1 - 1, KT), ul0 = ul * KT;
    const int clo = cta_of(ul0, T, G), chi = cta_of(ul0 + KT - 1, T, G);
    if (clo == static_cast<int>(blockIdx.x) && chi != clo) {
      const uint32_t need = static_cast<uint32_t>(T >= G ? chi - clo : KT - 1);
      while (load_acquire(p.cnt1 + ul) != need) __nanosleep(32);
      p.cnt1[ul] = 0;  // every contributor has arrived: nobody else touches it in this launch
      mbar_arrive(rdone);
    }
    return;
  }

  // ===== consumers =====
  const int ctid = threadIdx.x;  // 0..255
  uint8_t* xs = smem + L.xs;
  float* sxs = reinterpret_cast<float*>(smem + L.sxs);
  // FP4 codes decode to value x 2^-6: the 2^6 rides on the activation scale.
  constexpr float kSxMul = Tr::kFp4 ? 64.f : 1.f;
  if constexpr (!Tr::kFp4) {
    // Stage the tile scales once: a cold global load per tile would put DRAM latency on the
    // critical path of every tile.
    for (int i = ctid; i < min(n_tiles, kMaxSw); i += kWarps * 32)
      s_sw[i] = e8m0_to_f32(__ldg(p.w_scale + t0 + i));
  }
  if constexpr (!Tr::kFp4) {
    pdl_wait();
    pdl_trigger();
  }
  if (xrows) {
    const int grp = ctid / 8, sub = ctid % 8;  // 8 threads x 16 values per 128-wide block
    for (int b = 0; b < nbatch; ++b) {
      mbar_wait(xfull, b & 1);
      const int q0 = b * seg_per_batch, q1 = min(segs, q0 + seg_per_batch);
      for (int qb = q0; qb < q1; qb += kWarps * 4) {
        const int q = qb + grp;
        const bool act = q < q1;
        float v[16];
        float amax = 0.f;
        int r = 0, w = 0, kt = 0;
        if (act) {
          r = q / nwin;
          w = q % nwin;
          kt = (kt_first + w) % KT;
          const uint4* src = reinterpret_cast<const uint4*>(smem + L.raw + (q - q0) * 256 + sub * 32);
          const uint4 u0 = src[0], u1 = src[1];
          const uint32_t wd[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
          const int kb = kt * 128 + sub * 16;
#pragma unroll
          for (int i = 0; i < 16; ++i) {
            const uint32_t h = (i & 1) ? (wd[i / 2] >> 16) : (wd[i / 2] & 0xffffu);
            v[i] = kb + i < p.k ? __uint_as_float(h << 16) : 0.f;
            amax = fmaxf(amax, fabsf(v[i]));
          }
        } else {
#pragma unroll
          for (int i = 0; i < 16; ++i) v[i] = 0.f;
        }
        amax = block_amax8(amax);
        if (act) {
          const uint32_t e = quantize16_e4m3(v, amax, *reinterpret_cast<uint4*>(xs + r * L.xs_stride + w * 128 + sub * 16));
          if (sub == 0) sxs[r * p.nwin_max + w] = e8m0_to_f32(static_cast<uint8_t>(e)) * kSxMul;
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(xfree);
    }
    consumer_sync();
  }

  const int g = lane >> 2, tq = lane & 3;
  float acc[kMats][NH][4];
#pragma unroll
  for (int a = 0; a < kMats; ++a)
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[a][h][r] = 0.f;

  // Per-unit column mapping: B source row per half (col h*8+g), scale rows for C cols.
  int64_t cur_unit = -1;
  int brow[NH], crow[NH][2], ccount = 0, cfirst = 0, cnt_nt = 0;

  int64_t unit = floordiv(t0, KT);  // advanced incrementally: no division per tile
  int kt = static_cast<int>(t0 - unit * KT);
  for (int i = 0; i < n_tiles; ++i, ++kt) {
    if (kt == KT) {
      kt = 0;
      ++unit;
    }
    const int64_t t = t0 + i;
    if (unit != cur_unit) {
      cur_unit = unit;
      if constexpr (Tr::kFp4) {
        const int c = static_cast<int>(floordiv(unit, NT));
        cfirst = rt->chunk_first[c];
        ccount = rt->chunk_count[c];
        cnt_nt = static_cast<int>(unit - static_cast<int64_t>(c) * NT);
#pragma unroll
        for (int h = 0; h < NH; ++h) {
          const int pb = rt->sorted[cfirst + min(h * 8 + g, ccount - 1)];
          brow[h] = KIND == kFp4W13 ? pb / p.top_k : pb;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int pc = rt->sorted[cfirst + min(h * 8 + tq * 2 + e, ccount - 1)];
            crow[h][e] = KIND == kFp4W13 ? pc / p.top_k : pc;
          }
        }
      } else {
        cnt_nt = static_cast<int>(unit);
#pragma unroll
        for (int h = 0; h < NH; ++h) {
          brow[h] = min(h * 8 + g, p.m - 1);
#pragma unroll
          for (int e = 0; e < 2; ++e) crow[h][e] = min(h * 8 + tq * 2 + e, p.m - 1);
        }
      }
    }
    const int s = i % S;
    const uint32_t ph = (i / S) & 1;

    // B fragments and activation scales: independent of the weights, loaded before the wait.
    uint32_t bf[NH][kKs][2];
    float sx[NH][kKs / 4][2];
    if constexpr (KIND == kFp4W2) {
      const int hs_stride = p.hq_stride / 128;
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const uint8_t* src = p.hq_in + static_cast<int64_t>(brow[h]) * p.hq_stride + tq * 4;
#pragma unroll
        for (int ks = 0; ks < kKs; ++ks) {
          const int kg = kt * kKs * 32 + ks * 32;
          const bool ok = kg < p.hq_valid;
          bf[h][ks][0] = ok ? __ldg(reinterpret_cast<const uint32_t*>(src + kg)) : 0u;
          bf[h][ks][1] = ok ? __ldg(reinterpret_cast<const uint32_t*>(src + kg + 16)) : 0u;
        }
#pragma unroll
        for (int kb = 0; kb < kKs / 4; ++kb) {
          const int kbg = kt * (kKs / 4) + kb;
          const bool ok = kbg * 128 < p.hq_valid;
#pragma unroll
          for (int e = 0; e < 2; ++e)
            sx[h][kb][e] = ok ? __ldg(p.hs_in + static_cast<int64_t>(crow[h][e]) * hs_stride + kbg) * 64.f
                              : 0.f;
        }
      }
    } else {
      int slot = kt - kt_first;
      if (slot < 0) slot += KT;
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const uint8_t* src = xs + brow[h] * L.xs_stride + slot * 128 + tq * 4;
#pragma unroll
        for (int ks = 0; ks < kKs; ++ks) {
          bf[h][ks][0] = *reinterpret_cast<const uint32_t*>(src + ks * 32);
          bf[h][ks][1] = *reinterpret_cast<const uint32_t*>(src + ks * 32 + 16);
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) sx[h][0][e] = sxs[crow[h][e] * p.nwin_max + slot];
      }
    }

    const uint8_t* stage = ring + s * kTB;
    if constexpr (!Tr::kFp4) {
      const float sw = i < kMaxSw ? s_sw[i] : e8m0_to_f32(__ldg(p.w_scale + t));
      mbar_wait(full + s, ph);
      uint4 a[kKs];
#pragma unroll
      for (int ks = 0; ks < kKs; ++ks)
        a[ks] = *reinterpret_cast<const uint4*>(stage + ((warp * kKs + ks) * 32 + lane) * 16);
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + s);
      float c[NH][4];
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) c[h][r] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kKs; ++ks)
#pragma unroll
        for (int h = 0; h < NH; ++h)
          mma_e4m3(c[h], a[ks].x, a[ks].y, a[ks].z, a[ks].w, bf[h][ks][0], bf[h][ks][1]);
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const float s0 = sw * sx[h][0][0], s1 = sw * sx[h][0][1];
        acc[0][h][0] += c[h][0] * s0;
        acc[0][h][1] += c[h][1] * s1;
        acc[0][h][2] += c[h][2] * s0;
        acc[0][h][3] += c[h][3] * s1;
      }
    } else {
      mbar_wait(full + s, ph);
      uint4 a[kMats][kKs / 2];
      uint32_t sc[kMats][2][kKs / 4];
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat) {
#pragma unroll
        for (int k2 = 0; k2 < kKs / 2; ++k2)
          a[mat][k2] = *reinterpret_cast<const uint4*>(
              stage + warp * kFp4PieceBytes + ((mat * (kKs / 2) + k2) * 32 + lane) * 16);
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          const uint8_t* sp = stage + warp * kFp4PieceBytes + kFp4PieceCodeBytes + (mat * 16 + g + 8 * hi) * kKs;
          if constexpr (kKs == 4) {
            sc[mat][hi][0] = *reinterpret_cast<const uint32_t*>(sp);
          } else {
            const uint2 v = *reinterpret_cast<const uint2*>(sp);
            sc[mat][hi][0] = v.x;
            sc[mat][hi][1] = v.y;
          }
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(empty + s);
#pragma unroll
      for (int mat = 0; mat < kMats; ++mat)
#pragma unroll
        for (int kb = 0; kb < kKs / 4; ++kb) {
          float tt[NH][4];
#pragma unroll
          for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int r = 0; r < 4; ++r) tt[h][r] = 0.f;
#pragma unroll
          for (int k4 = 0; k4 < 4; ++k4) {
            const int ks = kb * 4 + k4;
            const uint4& w4 = a[mat][ks / 2];
            const uint32_t wg = (ks & 1) ? w4.z : w4.x, wg8 = (ks & 1) ? w4.w : w4.y;
            const uint32_t a0 = fp4_lo_to_e4m3(wg), a2 = fp4_hi_to_e4m3(wg);
            const uint32_t a1 = fp4_lo_to_e4m3(wg8), a3 = fp4_hi_to_e4m3(wg8);
            const float swg = e8m0_fast((sc[mat][0][kb] >> (8 * k4)) & 0xffu);
            const float swg8 = e8m0_fast((sc[mat][1][kb] >> (8 * k4)) & 0xffu);
#pragma unroll
            for (int h = 0; h < NH; ++h) {
              float c[4] = {0.f, 0.f, 0.f, 0.f};
              mma_e4m3(c, a0, a1, a2, a3, bf[h][ks][0], bf[h][ks][1]);
              tt[h][0] = fmaf(c[0], swg, tt[h][0]);
              tt[h][1] = fmaf(c[1], swg, tt[h][1]);
              tt[h][2] = fmaf(c[2], swg8, tt[h][2]);
              tt[h][3] = fmaf(c[3], swg8, tt[h][3]);
            }
          }
#pragma unroll
          for (int h = 0; h < NH; ++h) {
            const float s0 = sx[h][KIND == kFp4W2 ? kb : 0][0];
            const float s1 = sx[h][KIND == kFp4W2 ? kb : 0][1];
            acc[mat][h][0] = fmaf(tt[h][0], s0, acc[mat][h][0]);
            acc[mat][h][1] = fmaf(tt[h][1], s1, acc[mat][h][1]);
            acc[mat][h][2] = fmaf(tt[h][2], s0, acc[mat][h][2]);
            acc[mat][h][3] = fmaf(tt[h][3], s1, acc[mat][h][3]);
          }
        }
    }

    if (kt != KT - 1 && i != n_tiles - 1) continue;

    // ===== unit finished in this CTA: reduce across CTAs if split, then the epilogue =====
    const int64_t ut0 = unit * KT;
    const int c_lo = cta_of(ut0, T, G), c_hi = cta_of(ut0 + KT - 1, T, G);
    if (c_lo != c_hi) {
      if (c_lo != static_cast<int>(blockIdx.x)) {
        // Contributor (the unit is this CTA's first): publish the partial, signal, go on.
        float* slot = p.partials + (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRegs * 32;
#pragma unroll
        for (int a = 0; a < kMats; ++a)
#pragma unroll
          for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int r = 0; r < 4; ++r) __stcg(slot + ((a * NH + h) * 4 + r) * 32 + lane, acc[a][h][r]);
        consumer_sync();
        if (ctid == 0) arrive_release(p.cnt1 + unit);
#pragma unroll
        for (int a = 0; a < kMats; ++a)
#pragma unroll
          for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[a][h][r] = 0.f;
        continue;
      }
      // Reducer (holds the unit's first tile): own partial, then the contributors in ascending
      // CTA order (fixed order: bit-identical results run to run). With T >= G every CTA in
      // (c_lo, c_hi] owns tiles; with T < G each tile has its own CTA.
      mbar_wait(rdone, 0);
      const int ncontrib = T >= G ? c_hi - c_lo : KT - 1;
      constexpr int kBatch = kRegs <= 8 ? 8 : 4;  // 16 for kRegs = 4 measured 5 us slower (registers)
      for (int b0 = 0; b0 < ncontrib; b0 += kBatch) {
        float v[kBatch][kRegs];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          const int j = b0 + b;
          const int cc = j >= ncontrib ? -1 : (T >= G ? c_lo + 1 + j : cta_of(ut0 + 1 + j, T, G));
          const float* src = p.partials + (static_cast<int64_t>(cc < 0 ? 0 : cc) * kWarps + warp) * kRegs * 32;
#pragma unroll
          for (int r = 0; r < kRegs; ++r) v[b][r] = cc < 0 ? 0.f : __ldcg(src + r * 32 + lane);
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b)
#pragma unroll
          for (int a = 0; a < kMats; ++a)
#pragma unroll
            for (int h = 0; h < NH; ++h)
#pragma unroll
              for (int r = 0; r < 4; ++r) acc[a][h][r] += v[b][(a * NH + h) * 4 + r];
      }
    }

    const int nt = cnt_nt;
    if constexpr (KIND == kFp8) {
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = nt * 128 + warp * 16 + g + 8 * (r >> 1);
          const int col = h * 8 + tq * 2 + (r & 1);
          if (col < p.m && row < p.n) p.y[static_cast<int64_t>(col) * p.n + row] = f32_to_bf16(acc[0][h][r]);
        }
    } else if constexpr (KIND == kFp4W13) {
      float hv[NH][4];
      float am[NH][2];
#pragma unroll
      for (int h = 0; h < NH; ++h) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int col = h * 8 + tq * 2 + (r & 1);
          const int pair = rt->sorted[cfirst + min(col, ccount - 1)];
          const float wgt = col < ccount ? rt->weight[pair] : 0.f;
          hv[h][r] = round_bf16(swiglu_weighted(acc[0][h][r], acc[1][h][r], wgt));
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float m = fmaxf(fabsf(hv[h][e]), fabsf(hv[h][e + 2]));
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 8));
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16));
          am[h][e] = m;
        }
      }
      if (g == 0)
#pragma unroll
        for (int h = 0; h < NH; ++h)
#pragma unroll
          for (int e = 0; e < 2; ++e) s_amax[warp * 16 + h * 8 + tq * 2 + e] = am[h][e];
      consumer_sync();
      const int hs_stride = p.hq_stride / 128;
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = h * 8 + tq * 2 + e;
          float m = 0.f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s_amax[w * 16 + h * 8 + tq * 2 + e]);
          if (col >= ccount) continue;
          const int pair = rt->sorted[cfirst + col];
          const uint32_t e8 = fp8_act_scale_e8m0(m);
          const float inv = __uint_as_float((254u - e8) << 23);
          uint8_t* dst = p.hq_out + static_cast<int64_t>(pair) * p.hq_stride + nt * 128 + warp * 16 + g;
          dst[0] = static_cast<uint8_t>(cvt_e4m3x2(hv[h][e] * inv, 0.f));
          dst[8] = static_cast<uint8_t>(cvt_e4m3x2(hv[h][e + 2] * inv, 0.f));
          if (warp == 0 && g == 0)
            p.hs_out[static_cast<int64_t>(pair) * hs_stride + nt] = e8m0_to_f32(static_cast<uint8_t>(e8));
        }
      consumer_sync();  // s_amax is reused by the next unit
    } else {  // kFp4W2: per-slot bf16 outputs, then the expert sum once every chunk is in
      const int ystride = NT * 128;
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int col = h * 8 + tq * 2 + (r & 1);
          if (col >= ccount) continue;
          const int pair = rt->sorted[cfirst + col];
          const int row = nt * 128 + warp * 16 + g + 8 * (r >> 1);
          __stcg(p.ypair + static_cast<int64_t>(pair) * ystride + row, round_bf16(acc[0][h][r]));
        }
      consumer_sync();
      if (ctid == 0) {
        const uint32_t old = arrive_acq_rel(p.cnt2 + nt);
        s_flag = old == static_cast<uint32_t>(nchunks - 1);
      }
      consumer_sync();
      if (s_flag) {
        for (int idx = ctid; idx < 128 * p.m; idx += kWarps * 32) {
          const int tok = idx / 128, row = nt * 128 + idx % 128;
          if (row >= p.n) continue;
          float sum = 0.f;
          for (int j = 0; j < rt->tok_count[tok]; ++j)
            sum += __ldcg(p.ypair + static_cast<int64_t>(rt->tok_order[tok][j]) * ystride + row);
          p.y[static_cast<int64_t>(tok) * p.n + row] = f32_to_bf16(sum);
        }
        if (ctid == 0) p.cnt2[nt] = 0;
      }
    }
#pragma unroll
    for (int a = 0; a < kMats; ++a)
#pragma unroll
      for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[a][h][r] = 0.f;
  }
}

// ---- host-side planning -------------------------------------------------------------------------
struct Plan {
  int grid = 0, stages = 0, nwin_max = 0, raw_bytes = 0;
  size_t smem = 0;
  int64_t units_max = 0;
  size_t off_cnt1 = 0, off_cnt2 = 0, off_partials = 0, off_ypair = 0, ws_bytes = 0;
};

inline size_t align256(size_t v) { return (v + 255) / 256 * 256; }

// Deterministic in its arguments, so workspace queries and launches agree.
inline Plan make_plan(int kind, int nh, int m, int top_k, int64_t nt, int64_t kt, int tile_bytes,
                      int sms, int smem_optin, int smem_per_sm) {
  Plan pl;
  const int mats = kind == kFp4W13 ? 2 : 1;
  const int64_t chunks_max = kind == kFp8 ? 1 : static_cast<int64_t>(m) * top_k;
  pl.units_max = chunks_max * nt;
  const int64_t tmax = pl.units_max * kt;
  const int rows = kind == kFp4W2 ? 0 : m;
  // Two CTAs per SM when the kernel is built for it and >= 3 stages fit in half the SM's smem;
  // otherwise one CTA with up to 6 stages; more CTAs (waves) only if the activations need it.
  // Stage caps: deeper rings (6/8 with two CTAs, 8 with one) measured no faster (2026-11-29).
  const int cap2 = 4, cap1 = 6, occ = nh == 1 ? 2 : 1;
  const int budget2 = smem_per_sm / 2 - 2048, budget1 = smem_optin - 1024;
  for (int grid = sms;; grid += sms) {
    const int64_t l = (tmax + grid - 1) / grid;
    const int nwin = static_cast<int>(l < kt ? l : kt);
    const int raw = rows ? static_cast<int>(std::min<int64_t>(int64_t{rows} * nwin * 256, kRawBytesMax)) : 0;
    const Layout lay = make_layout(kind, m, 0, nwin, raw, tile_bytes);
    if (occ == 2 && grid == sms) {
      const int64_t l2 = (tmax + 2 * grid - 1) / (2 * grid);
      const int nwin2 = static_cast<int>(l2 < kt ? l2 : kt);
      const int raw2 = rows ? static_cast<int>(std::min<int64_t>(int64_t{rows} * nwin2 * 256, kRawBytesMax)) : 0;
      const Layout lay2 = make_layout(kind, m, 0, nwin2, raw2, tile_bytes);
      const int st2 = std::min<int>(cap2, (budget2 - lay2.total) / tile_bytes);
      if (st2 >= 3) {
        pl.grid = 2 * grid;
        pl.nwin_max = nwin2;
        pl.raw_bytes = raw2;
        pl.stages = st2;
        pl.smem = static_cast<size_t>(make_layout(kind, m, st2, nwin2, raw2, tile_bytes).total);
        break;
      }
    }
    const int stages = std::min<int>(cap1, (budget1 - lay.total) / tile_bytes);
    if (stages >= 2 || grid >= 64 * sms) {
      pl.grid = grid;
      pl.nwin_max = nwin;
      pl.raw_bytes = raw;
      pl.stages = stages;
      pl.smem = static_cast<size_t>(make_layout(kind, m, stages, nwin, raw, tile_bytes).total);
      break;
    }
  }
  // Counters first, sized for the largest m (kMaxTokensCap): their offsets do not depend on m, so
  // a workspace that served one m never presents another m's partials as counters.
  const int regs = mats * nh * 4;
  const int64_t units_cap = (kind == kFp8 ? 1 : int64_t{kMaxTokensCap} * top_k) * nt;
  size_t off = 0;
  pl.off_cnt1 = off;
  off = align256(off + units_cap * 4);
  pl.off_cnt2 = off;
  off = align256(off + nt * 4);
  pl.off_partials = off;
  off = align256(off + static_cast<size_t>(pl.grid) * 2 * kWarps * regs * 32 * 4);
  pl.off_ypair = off;
  if (kind == kFp4W2) off = align256(off + static_cast<size_t>(m) * top_k * nt * 128 * 4);
  pl.ws_bytes = off;
  return pl;
}

struct DeviceInfo {
  int sms = 0, smem_optin = 0, smem_per_sm = 0;
};
inline cudaError_t device_info(DeviceInfo* d) {
  int dev = 0;
  DSV4_GEMV_TRY(cudaGetDevice(&dev));
  DSV4_GEMV_TRY(cudaDeviceGetAttribute(&d->sms, cudaDevAttrMultiProcessorCount, dev));
  DSV4_GEMV_TRY(cudaDeviceGetAttribute(&d->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  DSV4_GEMV_TRY(cudaDeviceGetAttribute(&d->smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  return cudaSuccess;
}

// Launch with an optional programmatic-stream-serialization attribute (see pdl_wait).
template <class... KArgs, class... Args>
cudaError_t launch_ex(void (*kern)(KArgs...), int grid, int threads, size_t smem, cudaStream_t stream,
                      bool pdl, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(grid));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  DSV4_GEMV_TRY(cudaLaunchKernelEx(&cfg, kern, args...));
  return cudaGetLastError();
}

// Launches gemv_kernel<KIND, NH> with the plan. The kernel's dynamic smem limit is raised once
// per process to the most any plan asks for (optin - 1024), outside any stream capture's concern.
template <int KIND, int NH>
cudaError_t launch(Params p, const Plan& pl, const DeviceInfo& d, cudaStream_t stream, bool pdl = true) {
  auto kern = gemv_kernel<KIND, NH>;
  static PerDeviceOnce smem_opt_in;  // per device (func_attr.hpp)
  const cudaError_t attr =
      smem_opt_in([&] { return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, d.smem_optin - 1024); });
  DSV4_GEMV_TRY(attr);
  if (pl.smem > static_cast<size_t>(d.smem_optin - 1024)) return cudaErrorInvalidValue;
  p.grid = pl.grid;
  p.stages = pl.stages;
  p.nwin_max = pl.nwin_max;
  p.raw_bytes = pl.raw_bytes;
  return launch_ex(kern, pl.grid, kThreads, pl.smem, stream, pdl, p);
}

}  // namespace dsv4::cuda::gemv_detail
