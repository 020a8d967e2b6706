// The attention-side kernels of the CUDA forward (the "attention_kernels.cu" section of
// lib/cuda/kernels.hpp): the window / compressor ring copies, the KV FP8 simulation, the
// compressor's window closes (softmax pooling, norm, RoPE, Hadamard + FP4 or FP8), the lightning
// indexer's scoring and top-k selection (radix select, ties to the lowest id) and the sparse
// attention with sink. Each kernel mirrors its CPU twin (lib/cpu/compressor.cpp, indexer.cpp,
// attention.cpp, rope.cpp, norm.cpp) with the same rounding points; where the twin accumulates in
// double, these accumulate in f32 (dot products, softmax sums, the norm's sum of squares). The
// per-element numerics (bf16 rounding, e4m3 / e2m1 codes, e8m0 scales) are dsv4/dtypes.hpp's
// host/device functions, so the two backends cannot drift. Readable-reference stage: one CTA per
// natural unit of work, shared memory for the row being transformed, no tensor cores.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "dsv4/dtypes.hpp"
#include "kernels.hpp"

namespace dsv4::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;

// ---- small device helpers ----------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  // xor butterfly: every lane ends with the same bits (each step adds the same two values, a + b
  // and b + a being equal), so any lane may use the result.
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Block-wide reductions (blockDim a multiple of 32; every thread of the block must call). Every
// thread sums the per-warp partials in the same order, so all of them get identical bits.
__device__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // `red` may still be read by a previous call
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float t = 0.0f;
  for (int i = 0; i < nw; ++i) t += red[i];
  return t;
}
__device__ float block_max(float v, float* red) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float t = -INFINITY;
  for (int i = 0; i < nw; ++i) t = fmaxf(t, red[i]);
  return t;
}

// Block-wide ordered compaction step: the number of threads with a lower threadIdx whose flag is
// set, and (in *total) the block's count. Two barriers; every thread must call.
__device__ uint32_t block_exclusive_count(bool flag, uint32_t* buf, uint32_t* total) {
  const int lane = threadIdx.x % kWarp, wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  const unsigned bal = __ballot_sync(kFullMask, flag);
  const uint32_t in_warp = static_cast<uint32_t>(__popc(bal & ((1u << lane) - 1u)));
  __syncthreads();  // `buf` may still be read by a previous call
  if (lane == 0) buf[wid] = static_cast<uint32_t>(__popc(bal));
  __syncthreads();
  uint32_t before = 0, tot = 0;
  for (int w = 0; w < nw; ++w) {
    before += w < wid ? buf[w] : 0u;
    tot += buf[w];
  }
  *total = tot;
  return before + in_warp;
}

// One block of numerics.hpp's detail::block_qdq (same dtypes.hpp functions, same formula: amax →
// e8m0 scale s, x ← bf16(decode(encode(clamp(x / s, ±limit))) · s)), done by a whole warp on
// x[0, n), n ≤ 64. fp4: the FP4 simulation (§5.3, limit 6); else the FP8 simulation (§5.2, 448).
__device__ void warp_block_qdq(float* x, int n, bool fp4) {
  const int lane = threadIdx.x % kWarp;
  float amax = 0.0f;
  for (int i = lane; i < n; i += kWarp) amax = fmaxf(amax, fabsf(x[i]));
  amax = warp_max(amax);
  const float s = e8m0_to_f32(fp4 ? fp4_act_scale_e8m0(amax) : fp8_act_scale_e8m0(amax));
  const float limit = fp4 ? 6.0f : 448.0f;
  for (int i = lane; i < n; i += kWarp) {
    float v = x[i] / s;  // exact: s is a power of two (IEEE division: no fast-math in this build)
    v = v > limit ? limit : (v < -limit ? -limit : v);
    const float q = (fp4 ? e2m1_to_f32(f32_to_e2m1(v)) : e4m3_to_f32(f32_to_e4m3(v))) * s;
    x[i] = round_bf16(q);
  }
}

// The block-scaled simulation of `vecs` vectors of n values each (x[v·n + i]), blocks of `block`
// (32 or 64) from each vector's start, the last one partial; warps over blocks. Callers sync.
__device__ void block_qdq_warps(float* x, int vecs, int n, int block, bool fp4) {
  const int wid = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  const int per = (n + block - 1) / block;
  for (int b = wid; b < vecs * per; b += nw) {
    const int v = b / per, i0 = (b % per) * block;
    warp_block_qdq(x + v * n + i0, n - i0 < block ? n - i0 : block, fp4);
  }
}

// rope.cpp for one interleaved pair: θ = f32(p) · inv_freq (the f32 product), cos / sin of it in
// double, the rotation in double without FMA contraction (the host computes a·c − b·s with
// separate roundings), then f32 (and bf16 when asked).
__device__ __forceinline__ void rope_pair(float* v, int64_t p, float inv_freq, bool bf16_out) {
  const float theta = static_cast<float>(p) * inv_freq;
  const double c = cos(static_cast<double>(theta)), s = sin(static_cast<double>(theta));
  const double a = v[0], b = v[1];
  float x0 = static_cast<float>(__dsub_rn(__dmul_rn(a, c), __dmul_rn(b, s)));
  float x1 = static_cast<float>(__dadd_rn(__dmul_rn(a, s), __dmul_rn(b, c)));
  if (bf16_out) {
    x0 = round_bf16(x0);
    x1 = round_bf16(x1);
  }
  v[0] = x0;
  v[1] = x1;
}

// numerics.hpp's hadamard_bf16 on `vecs` vectors of n values (n a power of two) in shared memory:
// the same butterflies in f32 (each pair of a stage is independent, so the parallel order gives
// the same bits), one scale by 1/sqrt(n), bf16 out. Every thread calls; ends with a barrier.
__device__ void hadamard_shared(float* x, int n, int vecs) {
  const int half = n / 2, pairs = vecs * half;
  for (int h = 1; h < n; h <<= 1) {
    for (int t = threadIdx.x; t < pairs; t += blockDim.x) {
      const int v = t / half, i = t % half;
      float* y = x + v * n;
      const int j = (i / h) * 2 * h + i % h;
      const float a = y[j], b = y[j + h];
      y[j] = a + b;
      y[j + h] = a - b;
    }
    __syncthreads();
  }
  const float scale = 1.0f / sqrtf(static_cast<float>(n));
  for (int i = threadIdx.x; i < vecs * n; i += blockDim.x) x[i] = round_bf16(x[i] * scale);
  __syncthreads();
}

// Order-preserving 32-bit key of a score: larger float → larger unsigned key; −0 counts as +0
// (the host compares values, where they tie).
__device__ __forceinline__ uint32_t ordered_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Grid of a flat elementwise launch (grid-stride loops cover the rest).
unsigned flat_blocks(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 8192 ? (b > 0 ? b : 1) : 8192);
}

bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// Dynamic shared memory above the default 48 KiB needs the kernel's opt-in (a per-function
// attribute, not state of ours); more than the device allows is an invalid argument.
template <class Kernel>
cudaError_t prepare_smem(Kernel k, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  if (bytes > static_cast<size_t>(optin)) return cudaErrorInvalidValue;
  return cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// ---- ring_store / compressor_add_ape / kv_fp8_simulate -------------------------------------------

__global__ void ring_store_kernel(const float* src, int64_t first, int64_t S, int64_t width, int64_t p0,
                                  float* ring, int64_t ring_rows) {
  const int64_t n = (S - first) * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = first + i / width, e = i % width;
    ring[((p0 + s) % ring_rows) * width + e] = src[s * width + e];
  }
}

__global__ void add_ape_kernel(float* g, const float* ape, int64_t S, int64_t width, int64_t p0, int ratio) {
  const int64_t n = S * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = i / width, e = i % width;
    g[i] += ape[((p0 + s) % ratio) * width + e];
  }
}

// One warp per (row, block of 64).
__global__ void kv_fp8_kernel(float* x, int64_t rows, int64_t stride, int64_t n) {
  const int64_t per = (n + 63) / 64, total = rows * per;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp; w < total;
       w += warps) {
    const int64_t r = w / per, i0 = (w % per) * 64;
    warp_block_qdq(x + r * stride + i0, static_cast<int>(n - i0 < 64 ? n - i0 : 64), false);
  }
}

// ---- compressor_close ----------------------------------------------------------------------------

constexpr int kCompThreads = 256;

// Raw row value of position pos (≥ 0), feature col: the chunk's rows from p0 on, the ring before.
__device__ __forceinline__ float raw_at(const CompressorArgs& a, const float* chunk, const float* ring, int64_t pos,
                                        int64_t col) {
  return pos >= a.p0 ? chunk[(pos - a.p0) * a.width + col] : ring[(pos % a.ring) * a.width + col];
}

// One CTA per window close; entry index first_entry + blockIdx.x.
__global__ void __launch_bounds__(kCompThreads) compressor_close_kernel(CompressorArgs a, int64_t first_entry) {
  extern __shared__ float sh[];
  float* pooled = sh;       // [d]
  float* red = sh + a.d;    // [32]
  const int m = a.ratio, d = a.d;
  const bool overlap = a.width == 2 * static_cast<int64_t>(d);
  const int span = overlap ? 2 * m : m;
  const int64_t entry = first_entry + blockIdx.x;
  const int64_t p = (entry + 1) * m - 1;  // the closing position
  const int64_t first = p + 1 - span;
  const int s0 = first < 0 ? static_cast<int>(-first) : 0;  // positions < 0 do not exist

  // Per feature: softmax over the window's rows of the gate logits weighting kv (f32 sums; the
  // host twin sums in double). CSA: rows s < m are the previous window's, features [0, d).
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float mx = -INFINITY;
    for (int s = s0; s < span; ++s) {
      const int64_t col = overlap && s >= m ? d + e : e;
      mx = fmaxf(mx, raw_at(a, a.gate, a.ring_gate, first + s, col));
    }
    float den = 0.0f, num = 0.0f;
    for (int s = s0; s < span; ++s) {
      const int64_t col = overlap && s >= m ? d + e : e;
      const float wgt = expf(raw_at(a, a.gate, a.ring_gate, first + s, col) - mx);
      den += wgt;
      num += wgt * raw_at(a, a.kv, a.ring_kv, first + s, col);
    }
    const float v = num / den;
    pooled[e] = a.official ? round_bf16(v) : v;  // bf16 before the norm (spec §3.5.5)
  }
  __syncthreads();

  // RMSNorm (norm.cpp): f32 sum of squares, the scale and the weight multiply in double.
  float ss = 0.0f;
  for (int e = threadIdx.x; e < d; e += blockDim.x) ss += pooled[e] * pooled[e];
  ss = block_sum(ss, red);
  const double r = 1.0 / sqrt(static_cast<double>(ss) / d + static_cast<double>(a.norm_eps));
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    const double x = pooled[e];
    const float v = static_cast<float>(a.norm ? static_cast<double>(a.norm[e]) * x * r : x * r);
    pooled[e] = a.official ? round_bf16(v) : v;
  }
  __syncthreads();

  // RoPE at the window's first position on the last rope_dim values.
  const int64_t pos = p + 1 - m;
  for (int i = threadIdx.x; i < a.rope_dim / 2; i += blockDim.x)
    rope_pair(pooled + d - a.rope_dim + 2 * i, pos, a.inv_freq[i], a.official);
  __syncthreads();

  if (a.official) {
    if (a.indexer) {  // indexer keys: Hadamard, then FP4 simulation per 32 (§5.3)
      hadamard_shared(pooled, d, 1);
      block_qdq_warps(pooled, 1, d, 32, true);
    } else {  // main entries: FP8 simulation of the non-rope dims per 64 (§5.2)
      block_qdq_warps(pooled, 1, d - a.rope_dim, 64, false);
    }
    __syncthreads();
  }
  float* out = a.entries + entry * d;
  for (int e = threadIdx.x; e < d; e += blockDim.x) out[e] = pooled[e];
}

// ---- indexer_select ------------------------------------------------------------------------------

constexpr int kIdxThreads = 256;
constexpr int kIdxMaxCtas = 1024;      // scratch rows: about the device's resident CTAs, bounded memory
constexpr int kIdxMaxDimsPerLane = 8;  // a key row kept in registers: head_dim ≤ 256

// A grid-stride loop over queries; CTA b uses scratch row b (its scores of the current query).
__global__ void __launch_bounds__(kIdxThreads) indexer_kernel(IndexerArgs a, double wscale) {
  extern __shared__ float sh[];
  const int nh = a.heads, hd = a.head_dim, rd = a.rope_dim, topk = a.topk;
  float* qs = sh;                                        // [heads·head_dim] the transformed query
  float* wI = qs + nh * hd;                              // [heads] the head weights × scale
  uint32_t* hist = reinterpret_cast<uint32_t*>(wI + nh);  // [256] radix histogram
  uint32_t* wbuf = hist + 256;                           // [32] per-warp counts
  uint32_t* bcast = wbuf + kWarp;                        // [2] digit / remaining k of a radix pass
  const int tid = threadIdx.x, lane = tid % kWarp, wid = tid / kWarp, nw = blockDim.x / kWarp;
  float* scores = a.scratch + blockIdx.x * a.nkeys;

  for (int64_t s = blockIdx.x; s < a.S; s += gridDim.x) {
    const int64_t p = a.p0 + s;
    const int64_t count = (p + 1) / 4 < a.nkeys ? (p + 1) / 4 : a.nkeys;
    int32_t* out = a.sel + s * topk;
    if (count <= topk) {  // selects everything; q and w are not read (the caller may skip them)
      for (int64_t i = tid; i < count; i += blockDim.x) out[i] = static_cast<int32_t>(i);
      if (tid == 0) a.n_sel[s] = static_cast<int32_t>(count);
      continue;
    }

    // The query: RoPE at p, then (official) Hadamard + FP4 per head; written back in place.
    float* qg = a.q + s * nh * hd;
    for (int i = tid; i < nh * hd; i += blockDim.x) qs[i] = qg[i];
    for (int h = tid; h < nh; h += blockDim.x) {
      const float wv = a.w[s * nh + h];
      wI[h] = a.official ? round_bf16(wv * static_cast<float>(wscale))  // [OFF]: bf16 weight × scale
                         : static_cast<float>(static_cast<double>(wv) * wscale);
    }
    __syncthreads();
    for (int t = tid; t < nh * (rd / 2); t += blockDim.x) {
      const int h = t / (rd / 2), i = t % (rd / 2);
      rope_pair(qs + h * hd + hd - rd + 2 * i, p, a.inv_freq[i], a.official);
    }
    __syncthreads();
    if (a.official) {
      hadamard_shared(qs, hd, nh);
      block_qdq_warps(qs, nh, hd, 32, true);
      __syncthreads();
    }
    for (int i = tid; i < nh * hd; i += blockDim.x) qg[i] = qs[i];

    // Scores, a warp per key: per head q·k (f32; host: double), ReLU, weighted, summed over the
    // heads in ascending order (official: bf16 q·k, bf16 products, f32 sum, one bf16 rounding).
    for (int64_t k = wid; k < count; k += nw) {
      const float* kr = a.keys + k * hd;
      float kv[kIdxMaxDimsPerLane];
#pragma unroll
      for (int i = 0; i < kIdxMaxDimsPerLane; ++i) kv[i] = lane + kWarp * i < hd ? kr[lane + kWarp * i] : 0.0f;
      float acc = 0.0f;
      for (int h = 0; h < nh; ++h) {
        const float* qh = qs + h * hd;
        float part = 0.0f;
#pragma unroll
        for (int i = 0; i < kIdxMaxDimsPerLane; ++i)
          if (lane + kWarp * i < hd) part = __fmaf_rn(qh[lane + kWarp * i], kv[i], part);
        const float qk = warp_sum(part);
        if (a.official) acc += round_bf16(wI[h] * fmaxf(0.0f, round_bf16(qk)));
        else acc += wI[h] * fmaxf(0.0f, qk);
      }
      if (lane == 0) scores[k] = a.official ? round_bf16(acc) : acc;
    }
    __syncthreads();

    // Radix select of the topk-th largest key: 4 passes of 8 bits, most significant first, each a
    // histogram of the keys matching the prefix so far; then `need` = how many keys equal to the
    // threshold are taken (the lowest ids).
    uint32_t prefix = 0, mask = 0, need = static_cast<uint32_t>(topk);
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
      __syncthreads();
      for (int64_t k = tid; k < count; k += blockDim.x) {
        const uint32_t u = ordered_key(scores[k]);
        if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 0xffu], 1u);
      }
      __syncthreads();
      if (tid == 0) {  // from the top bin down: the bin holding the need-th largest
        uint32_t above = 0;
        int b = 255;
        for (; b > 0; --b) {
          if (above + hist[b] >= need) break;
          above += hist[b];
        }
        bcast[0] = static_cast<uint32_t>(b);
        bcast[1] = need - above;
      }
      __syncthreads();
      prefix |= bcast[0] << shift;
      mask |= 0xffu << shift;
      need = bcast[1];
      __syncthreads();  // bcast / hist reused by the next pass
    }

    // Ordered compaction in ascending id: every key above the threshold, plus the first `need`
    // keys equal to it.
    uint32_t ties_before = 0, taken = 0;
    for (int64_t base = 0; base < count && taken < static_cast<uint32_t>(topk); base += blockDim.x) {
      const int64_t k = base + tid;
      const uint32_t u = k < count ? ordered_key(scores[k]) : 0u;
      const bool gt = k < count && u > prefix, eq = k < count && u == prefix;
      uint32_t eq_total = 0, take_total = 0;
      const uint32_t eq_rank = ties_before + block_exclusive_count(eq, wbuf, &eq_total);
      const bool take = gt || (eq && eq_rank < need);
      const uint32_t pos = taken + block_exclusive_count(take, wbuf, &take_total);
      if (take) out[pos] = static_cast<int32_t>(k);
      ties_before += eq_total;
      taken += take_total;
    }
    if (tid == 0) a.n_sel[s] = topk;
    __syncthreads();  // shared q / scratch reused by the next query
  }
}

// ---- sparse_attention ----------------------------------------------------------------------------

constexpr int kAttnThreads = 256;
constexpr int kAttnMaxDimsPerThread = 4;  // hd ≤ 1024
constexpr int kAttnTile = 64;             // keys whose weights pass 2 shares through shared memory

// The keys of query s at position p, in the host twin's order: the window (positions ≥ p0 from
// the chunk, earlier from the ring), then the compressed entries (HCA: the first ones visible;
// CSA: the indexer's selection). A selected id outside [0, n_entries) (not produced by
// indexer_select) yields null: that key is skipped (weight 0) instead of read out of bounds.
struct AttnKeys {
  int64_t win_first = 0, nwin = 0, n = 0;
  const int32_t* sel = nullptr;
  __device__ const float* key(const AttentionArgs& a, int64_t j) const {
    if (j < nwin) {
      const int64_t pos = win_first + j;
      return pos < a.p0 ? a.window + (pos % a.window_ring) * a.hd : a.kv + (pos - a.p0) * a.hd;
    }
    int64_t i = j - nwin;
    if (sel) {
      i = sel[i];
      if (i < 0 || i >= a.n_entries) return nullptr;
    }
    return a.entries + i * a.hd;
  }
};

// l = f32(q·k · scale), the dot product in f32 by the warp (explicit FMAs, so pass 1 and pass 2
// compute bit-identical logits); −∞ for a skipped key. Every lane returns the same value.
__device__ __forceinline__ float attn_logit(const float* qs, const float* k, int hd, double scale) {
  if (!k) return -INFINITY;
  float part = 0.0f;
  for (int d = threadIdx.x % kWarp; d < hd; d += kWarp) part = __fmaf_rn(qs[d], k[d], part);
  return static_cast<float>(static_cast<double>(warp_sum(part)) * scale);
}

// One CTA per (query s, head h): blockIdx.x = s·H + h.
__global__ void __launch_bounds__(kAttnThreads) sparse_attention_kernel(AttentionArgs a, double scale) {
  extern __shared__ float4 sh4[];
  const float** kp = reinterpret_cast<const float**>(sh4);        // [tile] key pointers
  float* qs = reinterpret_cast<float*>(kp + kAttnTile);            // [hd]
  float* pden = qs + a.hd;                                         // [tile] p_j (denominator)
  float* pwt = pden + kAttnTile;                                   // [tile] p_j for Σ p_j k_j
  float* red = pwt + kAttnTile;                                    // [32]
  const int hd = a.hd, tid = threadIdx.x, lane = tid % kWarp, wid = tid / kWarp, nw = blockDim.x / kWarp;
  const int64_t s = blockIdx.x / a.H;
  const int h = static_cast<int>(blockIdx.x % a.H);
  const int64_t p = a.p0 + s;

  AttnKeys ks;
  ks.win_first = p - a.W + 1 > 0 ? p - a.W + 1 : 0;
  ks.nwin = p - ks.win_first + 1;
  int64_t ncomp = 0;
  if (a.ratio == 4) {
    const int32_t ns = a.n_sel[s];
    ncomp = ns < 0 ? 0 : (ns > a.topk ? a.topk : ns);
    ks.sel = a.sel + s * a.topk;
  } else if (a.ratio > 0) {
    ncomp = (p + 1) / a.ratio < a.n_entries ? (p + 1) / a.ratio : a.n_entries;
  }
  ks.n = ks.nwin + ncomp;

  const float* qg = a.q + (s * a.H + h) * hd;
  for (int d = tid; d < hd; d += blockDim.x) qs[d] = qg[d];
  __syncthreads();

  // Pass 1: the max of the logits. Reference: the max includes the sink; [OFF]: real keys only
  // (attention.cpp; the window is never empty, so the sink only enters the denominator).
  float mx = -INFINITY;
  for (int64_t j = wid; j < ks.n; j += nw) mx = fmaxf(mx, attn_logit(qs, ks.key(a, j), hd, scale));
  mx = block_max(mx, red);
  const float sink = a.sink[h];
  if (!a.official || ks.n == 0) mx = fmaxf(mx, sink);

  // Pass 2: p_j = e^{l_j − m} with the final m (no online rescaling, so the bf16 rounding of p_j
  // in official numerics sees the host's values); f32 denominator (host: double), each thread
  // accumulating its dims of Σ p_j k_j in f32.
  float acc[kAttnMaxDimsPerThread];
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerThread; ++i) acc[i] = 0.0f;
  float den = expf(sink - mx);  // the sink adds to the denominator only
  for (int64_t base = 0; base < ks.n; base += kAttnTile) {
    const int tile = ks.n - base < kAttnTile ? static_cast<int>(ks.n - base) : kAttnTile;
    for (int t = wid; t < tile; t += nw) {
      const float* k = ks.key(a, base + t);
      const float pj = expf(attn_logit(qs, k, hd, scale) - mx);
      if (lane == 0) {
        kp[t] = k;
        pden[t] = pj;
        pwt[t] = a.official ? round_bf16(pj) : pj;  // [OFF]: bf16 P for P·V, f32 denominator
      }
    }
    __syncthreads();
    for (int t = 0; t < tile; ++t) {
      den += pden[t];  // same order in every thread: identical denominators
      const float* k = kp[t];
      if (!k) continue;
      const float w = pwt[t];
#pragma unroll
      for (int i = 0; i < kAttnMaxDimsPerThread; ++i) {
        const int d = tid + i * kAttnThreads;
        if (d < hd) acc[i] += w * k[d];
      }
    }
    __syncthreads();  // the tile arrays are rewritten next
  }
  float* og = a.o + (s * a.H + h) * hd;
#pragma unroll
  for (int i = 0; i < kAttnMaxDimsPerThread; ++i) {
    const int d = tid + i * kAttnThreads;
    if (d < hd) {
      const float v = acc[i] / den;
      og[d] = a.official ? round_bf16(v) : v;
    }
  }
}

}  // namespace

// ============================ launchers ===========================================================

cudaError_t ring_store(const float* src, int64_t S, int64_t width, int64_t p0, float* ring, int64_t ring_rows,
                       cudaStream_t stream) {
  if (S < 0 || width <= 0 || p0 < 0 || ring_rows <= 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!src || !ring) return cudaErrorInvalidValue;
  const int64_t first = S > ring_rows ? S - ring_rows : 0;  // earlier rows would be overwritten
  constexpr int threads = 256;
  ring_store_kernel<<<flat_blocks((S - first) * width, threads), threads, 0, stream>>>(src, first, S, width, p0,
                                                                                       ring, ring_rows);
  return cudaGetLastError();
}

cudaError_t kv_fp8_simulate(float* x, int64_t rows, int64_t stride, int64_t n, cudaStream_t stream) {
  if (rows < 0 || n < 0 || stride < n) return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  if (!x) return cudaErrorInvalidValue;
  constexpr int threads = 256;
  const int64_t warps = rows * ((n + 63) / 64);
  kv_fp8_kernel<<<flat_blocks(warps * kWarp, threads), threads, 0, stream>>>(x, rows, stride, n);
  return cudaGetLastError();
}

cudaError_t compressor_add_ape(float* g, const float* ape, int64_t S, int64_t width, int64_t p0, int ratio,
                               cudaStream_t stream) {
  if (S < 0 || width <= 0 || p0 < 0 || ratio <= 0) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  if (!g || !ape) return cudaErrorInvalidValue;
  constexpr int threads = 256;
  add_ape_kernel<<<flat_blocks(S * width, threads), threads, 0, stream>>>(g, ape, S, width, p0, ratio);
  return cudaGetLastError();
}

cudaError_t compressor_close(const CompressorArgs& a, cudaStream_t stream) {
  if (a.S < 0 || a.p0 < 0 || a.ratio <= 0 || a.d <= 0) return cudaErrorInvalidValue;
  if (a.width != a.d && a.width != 2 * static_cast<int64_t>(a.d)) return cudaErrorInvalidValue;
  if (a.rope_dim < 0 || a.rope_dim % 2 != 0 || a.rope_dim > a.d || (a.rope_dim > 0 && !a.inv_freq))
    return cudaErrorInvalidValue;
  if (a.official && a.indexer && !is_pow2(a.d)) return cudaErrorInvalidValue;  // Hadamard size
  if (!(a.norm_eps >= 0.0f)) return cudaErrorInvalidValue;
  if (a.S == 0) return cudaSuccess;
  if (!a.kv || !a.gate) return cudaErrorInvalidValue;
  const int64_t first_entry = a.p0 / a.ratio, n_close = (a.p0 + a.S) / a.ratio - first_entry;
  if (n_close == 0) return cudaSuccess;  // (no entry yet: `entries` may still be unallocated)
  if (!a.entries) return cudaErrorInvalidValue;
  // A close reads at most span − 1 rows before the chunk; the ring must hold them distinctly.
  const int64_t span = a.width == a.d ? a.ratio : 2 * static_cast<int64_t>(a.ratio);
  if (a.p0 > 0 && (!a.ring_kv || !a.ring_gate || a.ring < 1 || a.ring < span - 1)) return cudaErrorInvalidValue;
  const size_t smem = (static_cast<size_t>(a.d) + kWarp) * sizeof(float);
  if (cudaError_t e = prepare_smem(compressor_close_kernel, smem); e != cudaSuccess) return e;
  compressor_close_kernel<<<static_cast<unsigned>(n_close), kCompThreads, smem, stream>>>(a, first_entry);
  return cudaGetLastError();
}

int64_t indexer_scratch_floats(int64_t S, int64_t nkeys) {
  if (S <= 0 || nkeys <= 0) return 0;
  return (S < kIdxMaxCtas ? S : kIdxMaxCtas) * nkeys;  // one row per CTA of the query loop
}

cudaError_t indexer_select(const IndexerArgs& a, cudaStream_t stream) {
  if (a.S < 0 || a.p0 < 0 || a.nkeys < 0 || a.topk <= 0 || a.heads <= 0 || a.head_dim <= 0)
    return cudaErrorInvalidValue;
  if (a.head_dim > kWarp * kIdxMaxDimsPerLane) return cudaErrorInvalidValue;
  if (a.rope_dim < 0 || a.rope_dim % 2 != 0 || a.rope_dim > a.head_dim || (a.rope_dim > 0 && !a.inv_freq))
    return cudaErrorInvalidValue;
  if (a.official && !is_pow2(a.head_dim)) return cudaErrorInvalidValue;  // Hadamard size
  if (a.S == 0) return cudaSuccess;
  if (!a.sel || !a.n_sel) return cudaErrorInvalidValue;
  // Only a query that sees more than topk keys reads q, w, keys and scratch.
  const int64_t max_count = (a.p0 + a.S) / 4 < a.nkeys ? (a.p0 + a.S) / 4 : a.nkeys;
  if (max_count > a.topk && (!a.q || !a.w || !a.keys || !a.scratch)) return cudaErrorInvalidValue;
  const size_t smem =
      (static_cast<size_t>(a.heads) * a.head_dim + a.heads) * sizeof(float) + (256 + kWarp + 2) * sizeof(uint32_t);
  if (cudaError_t e = prepare_smem(indexer_kernel, smem); e != cudaSuccess) return e;
  const double wscale =
      1.0 / std::sqrt(static_cast<double>(a.head_dim)) / std::sqrt(static_cast<double>(a.heads));  // as indexer.cpp
  const int64_t ctas = a.S < kIdxMaxCtas ? a.S : kIdxMaxCtas;
  indexer_kernel<<<static_cast<unsigned>(ctas), kIdxThreads, smem, stream>>>(a, wscale);
  return cudaGetLastError();
}

cudaError_t sparse_attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.S < 0 || a.p0 < 0 || a.H <= 0 || a.hd <= 0 || a.W <= 0 || a.ratio < 0 || a.n_entries < 0 || a.topk < 0)
    return cudaErrorInvalidValue;
  if (a.hd > kAttnThreads * kAttnMaxDimsPerThread) return cudaErrorInvalidValue;
  if (a.S == 0) return cudaSuccess;
  if (!a.q || !a.kv || !a.sink || !a.o) return cudaErrorInvalidValue;
  // Window rows before the chunk: at most W − 1, from the ring.
  if (a.p0 > 0 && (!a.window || a.window_ring < 1 || a.window_ring < a.W - 1)) return cudaErrorInvalidValue;
  if (a.ratio > 0 && a.n_entries > 0 && !a.entries) return cudaErrorInvalidValue;
  if (a.ratio == 4 && (!a.n_sel || (a.topk > 0 && !a.sel))) return cudaErrorInvalidValue;
  if (a.S * a.H > 0x7fffffffLL) return cudaErrorInvalidValue;  // grid.x
  if (!a.no_mma) {
    const cudaError_t e = sparse_attention_mma(a, stream);
    if (e != cudaErrorNotSupported) return e;
  }
  const size_t smem = kAttnTile * sizeof(const float*) +
                      (static_cast<size_t>(a.hd) + 2 * kAttnTile + kWarp) * sizeof(float);
  if (cudaError_t e = prepare_smem(sparse_attention_kernel, smem); e != cudaSuccess) return e;
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.hd));  // as attention.cpp
  sparse_attention_kernel<<<static_cast<unsigned>(a.S * a.H), kAttnThreads, smem, stream>>>(a, scale);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda
