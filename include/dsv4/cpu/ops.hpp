// The model's operations on host f32 tensors (the CPU reference backend). Each function is a plain
// loop written like its formula in the spec (section in the comment); f32 storage, double
// accumulation for dot products and softmax sums (the reference must hold 1e-3 on logits against
// a float64 oracle at 2300 tokens). Row-major layouts are stated per argument. No allocation that
// outlives a call; no global state.
#pragma once
#include "dsv4/expert_parallel.hpp"
#include <cstdint>
#include <span>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/cpu/state.hpp"
#include "dsv4/cpu/threadpool.hpp"
#include "dsv4/cpu/weights.hpp"

namespace dsv4::cpu {

// ---- basics -------------------------------------------------------------------------------
double dot(const float* a, const float* b, int64_t n);
// How a linear runs (official numerics, spec §3.0 table): f32 output (reference mode, compressors,
// router, head), bf16 output (wo_a, weights_proj), or FP8 1×128 activation quantisation + bf16
// output (every FP8 / FP4 linear).
enum class LinearOut : uint8_t { f32, bf16, fp8_bf16 };
// y[S, out] = x[S, in] · Wᵀ (rows dequantised once and reused for all S inputs).
void linear(const Linear& w, const float* x, int64_t S, float* y, ThreadPool& pool, LinearOut mode = LinearOut::f32);

// ---- norm.cpp (spec §3.2.3) --------------------------------------------------------------
// out[i] = w[i] · x[i] / sqrt(mean(x²) + eps); w may be null (unweighted). In place is allowed.
// bf16_out (official numerics): rounded to bf16 after the weight multiply ([OFF]'s placement).
void rms_norm(const float* x, const float* w, int64_t n, double eps, float* out, bool bf16_out = false);

// ---- rope.cpp (spec §3.5.3) --------------------------------------------------------------
struct RopeTable {
  std::vector<float> inv_freq;  // [rd/2] f32
  // Rotates the interleaved pairs of v[0:rd) by position p (inverse: conjugate rotation);
  // bf16_out (official numerics) stores the result rounded to bf16.
  void apply(float* v, int64_t p, bool inverse = false, bool bf16_out = false) const;
};

// ---- hc.cpp (spec §3.2.1, §3.2.2, §3.7) --------------------------------------------------------
struct HcShape {
  int hc = 0;
  int64_t D = 0;
  int sinkhorn_iters = 0;
  double hc_eps = 1e-6, norm_eps = 1e-6;
  bool official = false;  // collapse and mix outputs rounded to bf16 (spec §7.2)
};
// X [hc, D] → x_out [D], post [hc], comb [hc, hc] (row j = source stream).
void hc_pre(const HcShape& s, const HcWeights& w, const float* X, float* x_out, float* post, float* comb);
// X_new[k] = post[k]·y + Σ_j comb[j][k]·R[j]; X_new must not alias R.
void hc_post(const HcShape& s, const float* y, const float* R, const float* post, const float* comb, float* X_new);
// The head's collapse: h[D] = Σ_j (sigmoid(mix_j) + eps) · X[j].
void hc_head(const HcShape& s, const HcWeights& w, const float* X, float* h);

// ---- compressor.cpp (spec §3.5.5, §4.2) ------------------------------------------------------
struct CompressorParams {
  CompressorShape shape;
  const CompressorWeights* w = nullptr;
  const RopeTable* rope = nullptr;  // compressed-layer table
  int rope_dim = 0;
  double norm_eps = 1e-6;
  bool official = false;  // bf16 pooled entry before the norm, then FP8 (main) / Hadamard + FP4 (indexer)
  bool indexer = false;   // the indexer's compressor (its entries are keys)
};
// Feeds the S tokens x[S, D] at positions p0… through the state machine, appending every entry a
// closed window emits ([d] each, normed and RoPE'd at its window's first position) to `entries`.
void compressor_append(const CompressorParams& c, CompressorState& st, const float* x, int64_t S, int64_t p0,
                       std::vector<float>& entries, ThreadPool& pool);

// ---- indexer.cpp (spec §3.5.6) -------------------------------------------------------------
struct IndexerParams {
  const AttnWeights* w = nullptr;
  const RopeTable* rope = nullptr;
  int heads = 0, head_dim = 0, rope_dim = 0, topk = 0;
  bool torch_cpu_ties = false;  // false: ties to the lowest id; true: torch CPU topk (see LoadOptions)
  // torch-cpu only: the length of the oracle's score row (ForwardChunk::oracle_length / 4), so that
  // every chunk schedule selects what the oracle's full forward selected, ties included. 0 = the
  // entries that exist so far.
  int64_t torch_cpu_row = 0;
  std::vector<uint8_t>* tied = nullptr;  // optional [S]: set to 1 where the k-th and (k+1)-th scores tie
  bool official = false;  // Hadamard + FP4 query, bf16 head scores, weights and sums (spec §3.5.6)
};
// For each query s (position p0+s, inputs x[S, D] and qr[S, q_lora]), the selected main-entry ids
// among the visible keys (count ⌊(p+1)/4⌋): top-min(topk, count) by score (ties per
// `torch_cpu_ties`), returned in ascending id order.
std::vector<std::vector<int32_t>> indexer_select(const IndexerParams& ip, const std::vector<float>& keys,
                                                 const float* x, const float* qr, int64_t S, int64_t p0,
                                                 ThreadPool& pool);

// ---- attention.cpp (spec §3.5) -------------------------------------------------------------
struct AttnContext {
  const ModelConfig* cfg = nullptr;
  const LayerWeights* layer = nullptr;
  const LayerStateShape* shape = nullptr;
  const RopeTable* rope = nullptr;       // this layer's table (sliding or compressed)
  ThreadPool* pool = nullptr;
  bool torch_cpu_ties = false;
  std::vector<int64_t>* tie_positions = nullptr;  // optional: positions with a tied top-k boundary
  int64_t torch_cpu_row = 0;                      // see IndexerParams
  bool official = false;                          // official numerics (dsv4/numerics.hpp)
};
// a[S, D] = Attention_L(x[S, D]) for positions p0…p0+S−1; advances the layer's state.
void attention(const AttnContext& c, LayerState& st, const float* x, int64_t S, int64_t p0, float* a);

// ---- moe.cpp (spec §3.6) -----------------------------------------------------------------
// f[S, D] = MoE_L(x[S, D]) with token ids (hash routing).
// official: bf16 expert GEMM outputs, routing weight before w2, f32 sum in ascending expert id with
// the shared expert last and one bf16 rounding (spec §3.6); reference: f32/double, weight after w2.
// Expert parallelism emulated on the CPU (dsv4/expert_parallel.hpp): `world` ranks, each summing
// only the routed experts it owns, combined through EpCombineCpu; world 1 = no emulation.
struct MoeEp {
  int world = 1;
  EpCombine combine = EpCombine::partial;
  EpPlan plan;  // make_ep_plan(cfg, world), made once with the setting (used when world > 1)
};
void moe(const ModelConfig& cfg, const LayerWeights& layer, const float* x, const int32_t* tokens, int64_t S,
         float* f, ThreadPool& pool, bool official = false, const MoeEp& ep = {},
         int64_t* usage_row = nullptr);  // usage_row: [E] counts, +1 per (token, chosen expert)

}  // namespace dsv4::cpu
