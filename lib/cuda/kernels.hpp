// The CUDA forward's kernels (internal to libdsv4; tests include it through lib/). Each launcher
// computes what the CPU backend's op of the same name computes (lib/cpu/*.cpp, include/dsv4/cpu/ops.hpp)
// in the numerics `official` selects (dsv4/numerics.hpp), with f32 accumulation where the CPU twin
// accumulates in double. Activations are f32 device arrays (in official numerics holding
// bf16-representable values, exactly as the CPU twin stores them); row-major, strides in elements.
// Every launcher is asynchronous on `stream`, validates its arguments (cudaErrorInvalidValue) and
// returns the launch's error. No launcher allocates or keeps state.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dsv4/weight_view.hpp"

namespace dsv4::cuda {

// ============================ dense_kernels.cu ================================================

// ---- linear: y[r, o] = Σ_i x'[r, i] · W[o, i]  (lib/cpu/linear.cpp) ----
// x' = FP8 1×128 quantise-dequantise of the input row (spec §5.1, fp8_act_quant_dequant) when
// quant_act, else x. W is `w` (device pointers), or, with expert_ids, expert e = expert_ids[r] of a
// stack of identically shaped experts: data at w.data + e·expert_data_stride, scales at
// w.scale + e·expert_scale_stride (rows with e < 0 are skipped: y row left untouched).
// Input row of output row r: x + x_row(r)·x_stride, x_row(r) = x_rows ? x_rows[r] : r.
// Grouped (wo_a, spec §3.5.8): with out_group > 0, output column o reads the input columns
// [(o / out_group)·w.in, +w.in) of its row (x rows hold out/out_group · w.in values).
// Output rounded to bf16 when bf16_out. Accumulation f32.
struct LinearArgs {
  WeightView w;
  const int32_t* expert_ids = nullptr;
  int64_t expert_data_stride = 0, expert_scale_stride = 0;  // bytes
  const float* x = nullptr;
  int64_t x_stride = 0;
  const int32_t* x_rows = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
  int64_t rows = 0;
  int64_t out_group = 0;
  bool quant_act = false;
  bool bf16_out = false;
  // Kill switch of the vectorised path (16-byte weight loads, several rows per CTA; same math,
  // another f32 summation order): tests compare both, benchmarks measure both.
  bool no_vec = false;
  // Kill switch of linear_small alone (the vectorised and scalar paths stay).
  bool no_small = false;
  // Kill switch of linear_small_mma (official FP8 linears of ≤ 8 rows on the tensor cores).
  bool no_small_mma = false;
};
cudaError_t linear(const LinearArgs& a, cudaStream_t stream);

// ---- linear_small.cu: the decode path of `linear` (few rows, bandwidth-bound) ----
// Same contract and results (within the f32 summation-order tolerance) as `linear`, for
// a.rows <= kLinearSmallMaxRows; `linear` calls it first (unless a.no_vec) and falls back to its own
// paths when it returns cudaErrorNotSupported (a shape or alignment it does not take).
inline constexpr int64_t kLinearSmallMaxRows = 16;
cudaError_t linear_small(const LinearArgs& a, cudaStream_t stream);

// ---- linear_small_mma.cu: official FP8 linears of 1..8 rows on the tensor cores ----
// Same contract as linear_small for a.w FP8 with 128×128 scale blocks, a.quant_act, no expert ids
// and no out_group, in % 128 == 0, in ≤ 8192, out % 16 == 0 (else cudaErrorNotSupported before any
// launch): per 128-input block the exact products qx·qw summed by the tensor cores, promoted × sx·sw
// into the f32 result (DeepSeek's FP8 GEMM scheme); within linear's f32 summation bound, not its
// bits. linear_small calls it first unless a.no_small_mma.
cudaError_t linear_small_mma(const LinearArgs& a, cudaStream_t stream);

// ---- embedding (spec §3.1): X[s, j, :] = embed[tokens[s]] for every HC stream j < hc ----
// table: [vocab, D] BF16 (is_f32 false) or F32; tokens int32 [S] on the device, already checked
// to lie in [0, vocab). official: stored rounded to bf16 (a no-op for a BF16 table).
cudaError_t embed(const void* table, bool is_f32, const int32_t* tokens, int64_t S, int64_t D, int hc,
                  bool official, float* X, cudaStream_t stream);

// ---- RMSNorm rows (lib/cpu/norm.cpp): out[r] = w · x[r] / sqrt(mean(x[r]²) + eps) ----
// w may be null (unweighted); in place allowed; bf16_out rounds after the weight multiply.
cudaError_t rms_norm(const float* x, int64_t x_stride, const float* w, int64_t rows, int64_t n, float eps,
                     bool bf16_out, float* out, int64_t out_stride, cudaStream_t stream);

// ---- per-head query norm (spec §3.5.1): rows of n values, in place ----
// official: head_rms_norm_bf16 (dsv4/numerics.hpp); reference: rms_norm without weight, f32.
cudaError_t head_rms_norm(float* q, int64_t rows, int64_t n, float eps, bool official, cudaStream_t stream);

// ---- interleaved partial RoPE (lib/cpu/rope.cpp) ----
// Row r of v (v + r·stride + col, rd values: pairs (2i, 2i+1)) rotated by θ_i = f32(p)·inv_freq[i]
// with p = p0 + r / rows_per_position (cos/sin of the f32 angle, in double); the inverse rotation
// with `inverse`; bf16_out rounds each result. inv_freq: device f32 [rd/2].
cudaError_t rope(float* v, int64_t rows, int64_t stride, int64_t col, int rd, const float* inv_freq, int64_t p0,
                 int64_t rows_per_position, bool inverse, bool bf16_out, cudaStream_t stream);

// ---- fused query / KV epilogues: one launch each, bit-identical to the launches they replace ----
// head_rms_norm(q, rows, n, eps, official), then rope(q, rows, n, col, rd, inv_freq, p0,
// rows_per_position, /*inverse*/ false, /*bf16_out*/ official). Needs col + rd ≤ n.
cudaError_t head_rms_norm_rope(float* q, int64_t rows, int64_t n, float eps, bool official, int64_t col, int rd,
                               const float* inv_freq, int64_t p0, int64_t rows_per_position, cudaStream_t stream);
// rms_norm(x, x_stride, w, S, n, eps, /*bf16_out*/ official, out, out_stride), then rope(out, S,
// out_stride, col, rd, inv_freq, p0, 1, false, official), then in official numerics
// kv_fp8_simulate(out, S, out_stride, col) (the non-rope dims). Needs col + rd ≤ n; w may be null;
// in place (out == x, same stride) allowed.
cudaError_t kv_norm_rope_fp8(const float* x, int64_t x_stride, const float* w, int64_t S, int64_t n, float eps,
                             bool official, int64_t col, int rd, const float* inv_freq, int64_t p0, float* out,
                             int64_t out_stride, cudaStream_t stream);

// ---- hyper-connections (lib/cpu/hc.cpp; spec §3.2.1, §3.2.2, §3.7), one CTA per token ----
// HC weights on the device: fn f32 [mix, hc·D], base f32 [mix], scale f32 [3] (block) / [1] (head).
struct HcParams {
  const float* fn = nullptr;
  const float* base = nullptr;
  const float* scale = nullptr;
  int hc = 0;
  int64_t D = 0;
  int sinkhorn_iters = 0;
  float hc_eps = 1e-6f, norm_eps = 1e-6f;
  bool official = false;
  // Optional [S, hc·mix] precomputed partial dot products, column j·mix + i = X[s, j] · fn_i[j·D,
  // (j+1)·D) (one grouped linear over the streams, many CTAs: what decode wants); the kernels then
  // sum them over j (ascending) instead of computing the dots in their one CTA per token.
  const float* partials = nullptr;
};
// X [S, hc, D] → x_out [S, D], post [S, hc], comb [S, hc, hc] (row j = source stream).
cudaError_t hc_pre(const HcParams& p, const float* X, int64_t S, float* x_out, float* post, float* comb,
                   cudaStream_t stream);
// hc_pre in two launches, so that its Sinkhorn (a serial chain on one warp) can run on a side stream
// while the block goes on (post / comb are needed only at hc_post); together they give hc_pre's
// results bit for bit. Both take what hc_pre computes from p.partials.
// hc_pre_collapse: mix_out [S, (2+hc)·hc] = hc_pre's mixes m (double: Σ_j partials · 1/rms of the
// token's hc·D values) and x_out [S, D] = hc_pre's x_out. Requires p.partials (else
// cudaErrorInvalidValue). At S ≤ 16 a cluster of 8 CTAs per token.
cudaError_t hc_pre_collapse(const HcParams& p, const float* X, int64_t S, float* x_out, double* mix_out,
                            cudaStream_t stream);
// hc_pre_sinkhorn: post [S, hc] and comb [S, hc, hc] = hc_pre's, from hc_pre_collapse's mix_out; uses
// p.base, p.scale, p.hc, p.sinkhorn_iters and p.hc_eps. One warp per token. serial: kill switch of
// the one-warp Sinkhorn (hc·hc ≤ 32) — one thread for every hc, the same bits (tests compare both).
cudaError_t hc_pre_sinkhorn(const HcParams& p, const double* mix, int64_t S, float* post, float* comb,
                            cudaStream_t stream, bool serial = false);
// X_new[s, k] = post[s, k]·y[s] + Σ_j comb[s, j, k]·R[s, j]; X_new must not alias R.
cudaError_t hc_post(const HcParams& p, const float* y, const float* R, const float* post, const float* comb,
                    int64_t S, float* X_new, cudaStream_t stream);
// h[s] = Σ_j (sigmoid(mix_j·scale[0] + base_j) + eps) · X[s, j]  (p.fn has hc rows).
cudaError_t hc_head(const HcParams& p, const float* X, int64_t S, float* h, cudaStream_t stream);

// ---- MoE (lib/cpu/moe.cpp; spec §3.6) ----
// Router, one CTA per token: score_e = sqrt(softplus(x·gate_e)) (gate f32 [E, D]); selection:
// hash (tid2eid int32 [vocab, tid2eid_cols], first K columns, repeated ids kept once: the later
// duplicates get id −1) or top-K of score + bias (ties to the lower id); weight of slot k =
// score / Σ_selected score (norm_topk_prob) × routed_scale. Out: ids int32 [S, K] and weights f32
// [S, K] (−1 / 0 for unused slots). tokens: int32 [S] (hash layers only).
struct RouterParams {
  const float* gate = nullptr;
  const float* bias = nullptr;     // [E] (score routing) or null
  const int32_t* tid2eid = nullptr;  // hash routing or null
  int tid2eid_cols = 0;
  int E = 0, K = 0;
  int64_t D = 0;
  bool norm_topk_prob = true;
  float routed_scale = 1.0f;
  // Optional [S, E] precomputed logits x·gateᵀ (a linear over many CTAs, for decode); null = the
  // router computes them in its one CTA per token.
  const float* logits = nullptr;
};
cudaError_t router(const RouterParams& p, const float* x, const int32_t* tokens, int64_t S, int32_t* ids,
                   float* weights, cudaStream_t stream);
// SwiGLU of slot rows (rows with ids[r] < 0 skipped; ids may be null = all rows valid):
// official: h = bf16(weight[r] · silu(g') · u') with g' = min(g, limit), u' = clamp(u, ±limit) when
// clamp, silu in f32; reference: h = silu(g')·u' (weight applied after w2, in moe_combine).
// weights may be null (weight 1: the shared expert). g, u: rows of gu_stride values (0 = I; the
// fused w1|w3 output has g and u side by side: gu_stride 2I), h: [rows, I] (h may alias g only when
// gu_stride is I).
cudaError_t swiglu(const float* g, const float* u, const int32_t* ids, const float* weights, int64_t rows,
                   int64_t I, float limit, bool clamp, bool official, float* h, cudaStream_t stream,
                   int64_t gu_stride = 0);
// f[s] = Σ over token s's valid slots in ascending expert id of w·y_slot (reference; w = 1 in
// official, where the weight was applied before w2), then + y_shared[s]; official: f32 sum, one
// bf16 rounding at the end. y_slot [S·K, D] (slot r's row: y_rows[r] when y_rows is given — the
// prefill MoE's rows grouped by expert — else r), y_shared [S, D]. y_shared null: an expert-parallel
// rank's partial sum (the same f32 sum over the valid slots, written unrounded; ep_reduce finishes).
cudaError_t moe_combine(const float* y_slot, const int32_t* ids, const float* weights, const float* y_shared,
                        int64_t S, int K, int64_t D, bool official, float* f, cudaStream_t stream,
                        const int32_t* y_rows = nullptr);

// ============================ attention_kernels.cu ============================================

// Copies chunk rows src[s] (s = 0..S−1, position p0 + s, `width` values) into ring slot
// (p0 + s) mod ring — only the last min(S, ring) rows (earlier ones would be overwritten anyway).
cudaError_t ring_store(const float* src, int64_t S, int64_t width, int64_t p0, float* ring, int64_t ring_rows,
                       cudaStream_t stream);

// FP8 simulation of the KV non-rope dims (spec §5.2, fp8_simulate_bf16): columns [0, n) of each row,
// blocks of 64, in place.
cudaError_t kv_fp8_simulate(float* x, int64_t rows, int64_t stride, int64_t n, cudaStream_t stream);

// In place g[s] += ape[(p0 + s) mod ratio] for the chunk's raw gate rows (spec §3.5.5).
cudaError_t compressor_add_ape(float* g, const float* ape, int64_t S, int64_t width, int64_t p0, int ratio,
                               cudaStream_t stream);

// The compressor's window closes inside one chunk (lib/cpu/compressor.cpp): for every position p in
// [p0, p0+S) with (p+1) mod ratio == 0, the entry (p+1)/ratio − 1 is written to entries[that, :d]:
// per feature, the softmax over the window's raw rows of the gate logits weights the kv values
// (CSA, overlap: the previous window's rows use features [0, d), the own window's [d, 2d); HCA:
// own rows, [0, d); positions < 0 absent); then (official: bf16) RMSNorm with `norm` (bf16_out in
// official), RoPE at the window's first position p+1−ratio on the last rope_dim values (compressed
// table), and in official numerics the indexer's Hadamard + FP4 simulation (indexer) or the FP8
// simulation of the non-rope dims (main). Raw rows of positions ≥ p0 come from the chunk
// (kv/gate [S, width], gate with ape added), earlier ones from the ring (slot = position mod ring).
struct CompressorArgs {
  const float* kv = nullptr;
  const float* gate = nullptr;
  const float* ring_kv = nullptr;
  const float* ring_gate = nullptr;
  int64_t ring = 0;
  int ratio = 0, d = 0;
  int64_t width = 0;  // 2d (overlap, ratio 4) or d
  const float* norm = nullptr;
  float norm_eps = 1e-6f;
  const float* inv_freq = nullptr;
  int rope_dim = 0;
  bool official = false, indexer = false;
  int64_t p0 = 0, S = 0;
  float* entries = nullptr;  // [≥ (p0+S)/ratio, d]
};
cudaError_t compressor_close(const CompressorArgs& a, cudaStream_t stream);

// The lightning indexer's selection (lib/cpu/indexer.cpp) for queries at positions p0…p0+S−1.
// q [S, heads, head_dim] from indexer.wq_b — RoPE (position p, last rope_dim of each head) and in
// official numerics Hadamard + FP4 simulation are applied here, in place; w [S, heads] from
// weights_proj. keys [nkeys, head_dim]. Query s sees count = min((p+1)/4, nkeys) keys; it selects
// all of them when count ≤ topk, else the top-k scores (ties to the lowest id). Out: sel int32
// [S, topk] in ascending id order (entries past n_sel[s] unspecified), n_sel int32 [S].
// Scores: reference Σ_h w_h·scale·ReLU(q_h·k) in f32; official bf16 as the CPU twin rounds them.
// scratch: f32 [S, nkeys] (indexer_scratch_floats).
struct IndexerArgs {
  float* q = nullptr;
  const float* w = nullptr;
  const float* keys = nullptr;
  int64_t nkeys = 0;
  int heads = 0, head_dim = 0, rope_dim = 0, topk = 0;
  const float* inv_freq = nullptr;
  bool official = false;
  int64_t p0 = 0, S = 0;
  int32_t* sel = nullptr;
  int32_t* n_sel = nullptr;
  float* scratch = nullptr;
};
int64_t indexer_scratch_floats(int64_t S, int64_t nkeys);
cudaError_t indexer_select(const IndexerArgs& a, cudaStream_t stream);

// Sparse attention with sink (lib/cpu/attention.cpp §3.5.7) for queries at p0…p0+S−1, one shared
// K=V head: query s at position p sees the window positions max(0, p−W+1)…p (positions ≥ p0 from
// the chunk's kv [S, hd], earlier ones from the ring, slot = pos mod window_ring) plus compressed
// entries: HCA all min(n_entries, (p+1)/ratio), CSA the indexer's sel[s, 0..n_sel[s]), none for
// sliding layers (ratio 0). q [S, H, hd]; o [S, H, hd] = Σ_j p_j k_j / (e^{sink−m} + Σ_j p_j),
// p_j = e^{l_j − m}, l_j = q·k_j/√hd (official: l_j rounded to f32 as the twin does, m over real keys
// only, p_j rounded to bf16 for the weighted sum, o rounded to bf16). No RoPE here.
struct AttentionArgs {
  const float* q = nullptr;
  const float* kv = nullptr;
  const float* window = nullptr;
  int64_t window_ring = 0;
  int W = 0;
  const float* entries = nullptr;
  int64_t n_entries = 0;
  int ratio = 0;         // 0 sliding, 4 CSA (uses sel), else HCA
  const int32_t* sel = nullptr;
  const int32_t* n_sel = nullptr;
  int topk = 0;          // sel row stride
  const float* sink = nullptr;  // [H]
  int H = 0, hd = 0;
  bool official = false;
  int64_t p0 = 0, S = 0;
  float* o = nullptr;
  bool no_mma = false;  // kill switch of sparse_attention_mma (tests compare both paths)
};
cudaError_t sparse_attention(const AttentionArgs& a, cudaStream_t stream);

// ---- attention_mma.cu: sparse_attention on the tensor cores, all heads of a token per CTA ----
// Same contract as sparse_attention for official numerics (a.official) — results within the
// stated bf16 tolerance of it; sparse_attention calls it first (unless a.no_mma) and falls back to
// its own kernel when it returns cudaErrorNotSupported (reference numerics or shapes it does not take).
cudaError_t sparse_attention_mma(const AttentionArgs& a, cudaStream_t stream);

}  // namespace dsv4::cuda

namespace dsv4::cuda {
// ============================ gemm_kernels.cu =================================================
// Device helpers of the GEMM path (lib/cuda/gemm.hpp: cuBLASLt bf16 GEMMs for prefill chunks).
// out[r, 0..n) = bf16(x'[x_row(r), 0..n)) with x_row(r) = x_rows ? x_rows[r] : r; x' = FP8 1×128
// quantise-dequantise of the row (blocks from column 0) when quant, else x (must then hold
// bf16-representable values: the conversion rounds to nearest).
cudaError_t rows_to_bf16(const float* x, int64_t x_stride, const int32_t* x_rows, int64_t rows, int64_t n, bool quant,
                         uint16_t* out, int64_t out_stride, cudaStream_t stream);
// out[r, i] = bf16(w.at(row0 + r, i)) for r < rows (exact for FP8 / FP4 / BF16 weights).
cudaError_t weight_to_bf16(const WeightView& w, int64_t row0, int64_t rows, uint16_t* out, cudaStream_t stream);
// y[r, c] = round_bf16(y[r, c]) for r < rows, c < n.
cudaError_t round_rows_bf16(float* y, int64_t ld, int64_t rows, int64_t n, cudaStream_t stream);
// The exact split of an f32 array into three bf16 arrays, w = hi + mid + lo (hi = bf16(w),
// mid = bf16(w − hi), lo = w − hi − mid: each step exact in f32, lo ≤ 8 significant bits), so a
// product x·w with bf16 x is three exact bf16 products (f32 weights on the GEMM path).
cudaError_t split3_bf16(const float* w, int64_t n, uint16_t* hi, uint16_t* mid, uint16_t* lo, cudaStream_t stream);
// y[r, i] = (a + b) + c at [r·ld_in + i] (f32, then bf16 when asked) for r < rows, i < n.
cudaError_t sum3_rows(const float* a, const float* b, const float* c, int64_t ld_in, int64_t rows, int64_t n, bool bf16,
                      float* y, int64_t ld, cudaStream_t stream);

// ============================ gemm_mma.cu ======================================================
// C[M, N] (f32, row stride ldc) = A[M, K] · B[N, K]ᵀ, A and B bf16 bits, row-major (row strides lda,
// ldb), on the tensor cores with promoted accumulation: each group of 16 products is summed by
// one mma from a zero accumulator and added to an f32 register accumulator with a rounding
// (round-to-nearest) f32 add, so the result carries f32-sum accuracy (no truncating accumulation
// over the whole K as a plain tensor-core GEMM does — see lib/cuda/gemm.hpp). Needs K % 8 == 0,
// lda % 8 == 0, ldb % 8 == 0 and 16-byte aligned A and B; returns cudaErrorNotSupported (before
// any launch) otherwise. M, N any ≥ 0. C must not alias A or B.
cudaError_t gemm_bf16_promoted(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C, int64_t ldc,
                               int64_t M, int64_t N, int64_t K, cudaStream_t stream);

// ============================ synthetic_fill.cu ===============================================
// Random weight bytes made on the device (dsv4-bench's synthetic full-width models; values as
// make-model draws them, see lib/cuda/synthetic.hpp). Deterministic for a seed.
// FP8 codes e4m3(amp · U[-1, 1)) (amp ≤ 448: the block scale's units).
cudaError_t fill_fp8_codes(uint8_t* dst, int64_t n, uint64_t seed, float amp, cudaStream_t stream);
// Uniformly random bytes (FP4 e2m1 code pairs).
cudaError_t fill_random_bytes(uint8_t* dst, int64_t n, uint64_t seed, cudaStream_t stream);
// e8m0 scale codes base + {−jitter, 0, +jitter} at random.
cudaError_t fill_scale_codes(uint8_t* dst, int64_t n, uint64_t seed, int base, int jitter, cudaStream_t stream);
}  // namespace dsv4::cuda

// ============================ ep_kernels.cu (expert parallelism) ===============================
namespace dsv4::cuda {
// A rank's view of the router's choice: out[i] = ids[i] − lo for lo ≤ ids[i] < hi (the rank's own
// experts, numbered from 0 as its arena stores them), −1 otherwise (skipped by every expert kernel
// and by moe_combine). n slots.
cudaError_t ep_local_ids(const int32_t* ids, int64_t n, int lo, int hi, int32_t* out, cudaStream_t stream);
// The combine after the all-gather: f[s] = (Σ_{r=0}^{W−1} partials[r][s], f32 in rank order) +
// y_shared[s], official: one bf16 rounding. partials [W, S, D] (rank r's moe_combine partial),
// y_shared and f [S, D]. At W = 1 this is bit-identical to moe_combine with the shared expert.
cudaError_t ep_reduce(const float* partials, int W, int64_t S, int64_t D, const float* y_shared, bool official, float* f,
                      cudaStream_t stream);
}  // namespace dsv4::cuda
