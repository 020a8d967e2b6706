// The DeepSeek-V4 forward pass on the GPU, top to bottom (spec §3) — the same skeleton, names and
// rounding points as lib/cpu/forward.cpp and lib/cpu/attention.cpp / moe.cpp: embedding → HC
// expansion → decoder blocks (hc_pre → norm → attention → hc_post; hc_pre → norm → MoE → hc_post)
// → HC head → final norm → LM head; plus the MTP layer (§3.8). Every launch is asynchronous on
// the backend's stream and checked; the host waits once, when the chunk's outputs are copied back.
// No work here beyond calling the kernels of lib/cuda/kernels.hpp.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda_backend.hpp"
#include "ep_transport.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cuda {
namespace {
// The indexer's score rows of one launch stay under this many bytes (queries are split).
constexpr size_t kIndexerScratchBytes = size_t{256} << 20;
// Up to this many tokens the HC mixes and the router logits run as linears over many CTAs first
// (decode: one CTA per token would read the 1.5 MB HC / 3 MB gate weights through one SM).
constexpr int64_t kSplitMixTokens = 16;

template <class T> void to_host(std::vector<T>& dst, const T* src, size_t n, cudaStream_t s) {
  dst.resize(n);
  if (n) DSV4_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
}
}  // namespace

// The partial HC mix dots of X [S, hc, D] (HcParams::partials) for small S, else null (the hc
// kernels compute them themselves).
const float* CudaBackend::hc_partials(const DevHc& h, const float* X, int64_t S) {
  if (S > kSplitMixTokens && !gemm_) return nullptr;  // prefill chunks: on the GEMM path when it is on
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, mix = h.fn_streams.out / hc;
  float* part = ws_.get<float>(static_cast<size_t>(S * h.fn_streams.out));
  LinearArgs a;
  a.w = h.fn_streams;
  a.x = X;
  a.x_stride = hc * D;
  a.y = part;
  a.y_stride = h.fn_streams.out;
  a.rows = S;
  a.out_group = mix;  // output j·mix + i reads stream j
  run_linear(a);
  return part;
}

// The MoE's slot → token map (slot r = t·K + k reads token t) for a chunk of S tokens.
void CudaBackend::upload_slot_rows(int64_t S) {
  const int K = cfg_.experts_per_token;
  std::vector<int32_t> rows(static_cast<size_t>(S * K));
  for (int64_t r = 0; r < S * K; ++r) rows[static_cast<size_t>(r)] = static_cast<int32_t>(r / K);
  int32_t* d = ws_.get<int32_t>(rows.size());
  DSV4_CUDA_CHECK(cudaMemcpyAsync(d, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice, stream()));
  slot_rows_ = d;
}

HcParams CudaBackend::hc_params(const DevHc& h) const {
  HcParams p;
  p.fn = h.fn;
  p.base = h.base;
  p.scale = h.scale;
  p.hc = cfg_.hc_mult;
  p.D = cfg_.hidden_size;
  p.sinkhorn_iters = cfg_.hc_sinkhorn_iters;
  p.hc_eps = static_cast<float>(cfg_.hc_eps);
  p.norm_eps = static_cast<float>(cfg_.rms_norm_eps);
  p.official = official_;
  return p;
}

// y[rows, w.out] = x[rows, w.in] · Wᵀ; quant: FP8 1×128 activation quantisation (official FP8 /
// FP4 linears); bf16: bf16 output.
void CudaBackend::lin(const WeightView& w, const float* x, int64_t rows, float* y, bool quant, bool bf16,
                      cudaStream_t on) {
  LinearArgs a;
  a.w = w;
  a.x = x;
  a.x_stride = w.in;
  a.y = y;
  a.y_stride = w.out;
  a.rows = rows;
  a.quant_act = quant;
  a.bf16_out = bf16;
  run_linear(a, on);
}

// Prefill chunks (official numerics, ≥ kGemmMinRows rows): cuBLASLt over the exactly dequantised
// weight (lib/cuda/gemm.hpp; F32 weights stay on linear); its scratch dies with the call.
void CudaBackend::run_linear(const LinearArgs& a_in, cudaStream_t on) {
  LinearArgs a = a_in;
  a.no_small_mma = no_small_mma_;
  if (gemm_ && a.rows >= kGemmMinRows && !a.expert_ids) {
    if (on) fail(Status::internal, "cuda backend: a GEMM-path linear asked for on a side stream");
    const Workspace::Mark m = ws_.mark();
    const bool done = gemm_->linear(a, ws_, stream());
    ws_.rewind(m);
    if (done) return;
  }
  DSV4_CUDA_CHECK(linear(a, on ? on : stream()));
}

// The routed experts of a prefill chunk on the tensor cores: the S·K slots grouped by expert (a
// counting sort on the host — the ids come back once per MoE layer; the group sizes size the
// GEMMs), then per expert with rows: w1 and w3 dequantised to bf16 and one GEMM each over its
// gathered, FP8-quantised rows; SwiGLU (official: the routing weight applied before w2, one bf16
// rounding) over all rows; the hidden rows FP8-quantised; per expert w2. ys holds the rows in the
// grouped order and y_rows maps slot → row for moe_combine, which sums in ascending expert id as
// before. Same arithmetic as the linear() path (see gemm.hpp), another f32 summation order.
void CudaBackend::experts_gemm(const DevExperts& E, const float* x, const int32_t* ids, const float* wts, int64_t S,
                               float* ys, const int32_t*& y_rows) {
  const int K = cfg_.experts_per_token, NE = E.count;  // the experts this arena holds (local ids)
  const int64_t D = cfg_.hidden_size, I = cfg_.moe_intermediate_size, n = S * K;
  cudaStream_t s = stream();
  std::vector<int32_t> hid;
  std::vector<float> hw;
  to_host(hid, ids, static_cast<size_t>(n), s);
  to_host(hw, wts, static_cast<size_t>(n), s);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<int64_t> start(static_cast<size_t>(NE) + 1, 0);
  for (int32_t e : hid)
    if (e >= 0) ++start[static_cast<size_t>(e) + 1];
  for (int e = 0; e < NE; ++e) start[static_cast<size_t>(e) + 1] += start[static_cast<size_t>(e)];
  const int64_t m = start[static_cast<size_t>(NE)];
  // One upload: [token of row (m) | slot → row (n)] as int32, then the rows' weights (m) as f32.
  std::vector<int32_t> pack(static_cast<size_t>(m + n + m));
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t r = 0; r < n; ++r) {
    const int32_t e = hid[static_cast<size_t>(r)];
    int32_t row = -1;
    if (e >= 0) {
      row = static_cast<int32_t>(fill[static_cast<size_t>(e)]++);
      pack[static_cast<size_t>(row)] = static_cast<int32_t>(r / K);
      std::memcpy(&pack[static_cast<size_t>(m + n + row)], &hw[static_cast<size_t>(r)], 4);
    }
    pack[static_cast<size_t>(m + r)] = row;
  }
  int32_t* dpack = ws_.get<int32_t>(pack.size());
  DSV4_CUDA_CHECK(cudaMemcpyAsync(dpack, pack.data(), pack.size() * 4, cudaMemcpyHostToDevice, s));
  const int32_t* row_token = dpack;
  y_rows = dpack + m;
  const float* row_w = reinterpret_cast<const float*>(dpack + m + n);
  if (m == 0) return;

  // g and u side by side per row ([m, 2I]): one dequantisation and one GEMM per expert where
  // w1|w3 are stored as one weight (E.has_w13), else two of each into the two halves.
  uint16_t* X = ws_.get<uint16_t>(static_cast<size_t>(m * D));
  float* gu = ws_.get<float>(static_cast<size_t>(m * 2 * I));
  uint16_t* W13 = ws_.get<uint16_t>(static_cast<size_t>(2 * I * D));
  DSV4_CUDA_CHECK(rows_to_bf16(x, D, row_token, m, D, true, X, D, s));
  auto expert = [](const WeightView& w, int e, int64_t ds, int64_t ss) {
    WeightView v = w;
    v.data += e * ds;
    if (v.scale) v.scale += e * ss;
    return v;
  };
  for (int e = 0; e < NE; ++e) {
    const int64_t r0 = start[static_cast<size_t>(e)], cnt = start[static_cast<size_t>(e) + 1] - r0;
    if (cnt == 0) continue;
    if (E.has_w13) {
      DSV4_CUDA_CHECK(weight_to_bf16(expert(E.w13, e, E.w1_data_stride, E.w1_scale_stride), 0, 2 * I, W13, s));
      gemm_->bf16_nt(X + r0 * D, D, W13, D, gu + r0 * 2 * I, 2 * I, cnt, 2 * I, D, s);
    } else {
      DSV4_CUDA_CHECK(weight_to_bf16(expert(E.w1, e, E.w1_data_stride, E.w1_scale_stride), 0, I, W13, s));
      DSV4_CUDA_CHECK(weight_to_bf16(expert(E.w3, e, E.w3_data_stride, E.w3_scale_stride), 0, I, W13 + I * D, s));
      gemm_->bf16_nt(X + r0 * D, D, W13, D, gu + r0 * 2 * I, 2 * I, cnt, I, D, s);
      gemm_->bf16_nt(X + r0 * D, D, W13 + I * D, D, gu + r0 * 2 * I + I, 2 * I, cnt, I, D, s);
    }
  }
  const float limit = static_cast<float>(cfg_.swiglu_limit);
  float* g = ws_.get<float>(static_cast<size_t>(m * I));
  DSV4_CUDA_CHECK(swiglu(gu, gu + I, nullptr, row_w, m, I, limit, cfg_.swiglu_limit > 0, true, g, s, 2 * I));
  uint16_t* H = ws_.get<uint16_t>(static_cast<size_t>(m * I));
  DSV4_CUDA_CHECK(rows_to_bf16(g, I, nullptr, m, I, true, H, I, s));
  uint16_t* W2 = W13;  // D·I elements: the w1|w3 scratch, free now (stream order)
  for (int e = 0; e < NE; ++e) {
    const int64_t r0 = start[static_cast<size_t>(e)], cnt = start[static_cast<size_t>(e) + 1] - r0;
    if (cnt == 0) continue;
    DSV4_CUDA_CHECK(weight_to_bf16(expert(E.w2, e, E.w2_data_stride, E.w2_scale_stride), 0, D, W2, s));
    gemm_->bf16_nt(H + r0 * I, I, W2, I, ys + r0 * D, D, cnt, D, I, s);
  }
  DSV4_CUDA_CHECK(round_rows_bf16(ys, D, m, D, s));
}

void CudaBackend::decoder_block(const DevLayer& L, size_t slot, DevSequence& st, float*& X, float*& Xn,
                                const int32_t* tokens_d, int64_t S, int64_t p0, int64_t keep) {
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  float* x = ws_.get<float>(static_cast<size_t>(S * D));
  float* y = ws_.get<float>(static_cast<size_t>(S * D));
  float* post = ws_.get<float>(static_cast<size_t>(S * hc));
  float* comb = ws_.get<float>(static_cast<size_t>(S * hc * hc));
  bool forked = false;  // post / comb still being written on the side stream
  auto pre = [&](const DevHc& hw, const float* norm_w) {
    HcParams hp = hc_params(hw);
    hp.partials = hc_partials(hw, X, S);
    if (hc_fork_ && hp.partials) {
      // The collapse (what the block needs next) here; the Sinkhorn (post / comb, needed only at
      // hc_post) on the side stream, overlapping the attention / MoE it brackets.
      double* mix = ws_.get<double>(static_cast<size_t>(S * (2 + hc) * hc));
      DSV4_CUDA_CHECK(hc_pre_collapse(hp, X, S, x, mix, stream()));
      DSV4_CUDA_CHECK(cudaEventRecord(fork_ev_->get(), stream()));
      DSV4_CUDA_CHECK(cudaStreamWaitEvent(side_->get(), fork_ev_->get(), 0));
      DSV4_CUDA_CHECK(hc_pre_sinkhorn(hp, mix, S, post, comb, side_->get()));
      DSV4_CUDA_CHECK(cudaEventRecord(join_ev_->get(), side_->get()));
      forked = true;
    } else {
      DSV4_CUDA_CHECK(hc_pre(hp, X, S, x, post, comb, stream()));
    }
    DSV4_CUDA_CHECK(rms_norm(x, D, norm_w, S, D, eps, official_, x, D, stream()));
  };
  auto post_mix = [&](const DevHc& hw) {
    if (forked) DSV4_CUDA_CHECK(cudaStreamWaitEvent(stream(), join_ev_->get(), 0));
    forked = false;
    DSV4_CUDA_CHECK(hc_post(hc_params(hw), y, X, post, comb, S, Xn, stream()));
    std::swap(X, Xn);
  };

  // Attention half.
  pre(L.hc_attn, L.attn_norm);
  attention(L, slot, st, x, S, p0, keep, y);
  post_mix(L.hc_attn);

  // FFN half.
  pre(L.hc_ffn, L.ffn_norm);
  moe(L, x, tokens_d, S, y);
  post_mix(L.hc_ffn);
}

void CudaBackend::attention(const DevLayer& L, size_t slot, DevSequence& st, const float* x, int64_t S, int64_t p0,
                            int64_t keep, float* a) {
  const LayerStateShape& shape = layout_[slot];
  DevLayerState& ls = st.layers[slot];
  const int64_t H = cfg_.num_heads, hd = cfg_.head_dim, rd = cfg_.rope_dim, qlr = cfg_.q_lora_rank;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  const bool off = official_;
  const float* inv = L.spec.attn == AttnKind::sliding ? w_.inv_freq_sliding : w_.inv_freq_compressed;
  cudaStream_t s = stream();

  // §3.5.1 query path: qr feeds wq_b and the indexer.
  float* qr = ws_.get<float>(static_cast<size_t>(S * qlr));
  float* q = ws_.get<float>(static_cast<size_t>(S * H * hd));
  float* kv = ws_.get<float>(static_cast<size_t>(S * hd));
  // §3.5.2 the single shared K=V head: kv_norm, RoPE, then (official) the FP8 simulation of the
  // non-rope dims (§5.2) — one launch where fused.
  auto kv_path = [&](const float* raw, int64_t raw_stride) {
    if (fuse_) {
      DSV4_CUDA_CHECK(kv_norm_rope_fp8(raw, raw_stride, L.kv_norm, S, hd, eps, off, hd - rd, static_cast<int>(rd),
                                       inv, p0, kv, hd, s));
      return;
    }
    DSV4_CUDA_CHECK(rms_norm(raw, raw_stride, L.kv_norm, S, hd, eps, off, kv, hd, s));
    DSV4_CUDA_CHECK(rope(kv, S, hd, hd - rd, static_cast<int>(rd), inv, p0, 1, false, off, s));
    if (off) DSV4_CUDA_CHECK(kv_fp8_simulate(kv, S, hd, hd - rd, s));
  };
  if (L.has_wqkv) {  // wq_a|wkv stored as one weight: one launch, then each norm reads its columns
    float* qkv = ws_.get<float>(static_cast<size_t>(S * (qlr + hd)));
    lin(L.wqkv, x, S, qkv, off, off);
    DSV4_CUDA_CHECK(rms_norm(qkv, qlr + hd, L.q_norm, S, qlr, eps, off, qr, qlr, s));
    kv_path(qkv + qlr, qlr + hd);
  } else {
    lin(L.wq_a, x, S, qr, off, off);
    DSV4_CUDA_CHECK(rms_norm(qr, qlr, L.q_norm, S, qlr, eps, off, qr, qlr, s));
    lin(L.wkv, x, S, kv, off, off);
    kv_path(kv, hd);
  }
  lin(L.wq_b, qr, S, q, off, off);
  if (fuse_) {
    DSV4_CUDA_CHECK(head_rms_norm_rope(q, S * H, hd, eps, off, hd - rd, static_cast<int>(rd), inv, p0, H, s));
  } else {
    DSV4_CUDA_CHECK(head_rms_norm(q, S * H, hd, eps, off, s));
    DSV4_CUDA_CHECK(rope(q, S * H, hd, hd - rd, static_cast<int>(rd), inv, p0, H, false, off, s));
  }

  // §3.5.5 / §3.5.6 compressed keys: the whole chunk first (append-only; each query looks only at
  // the entries visible at its own position).
  st.ensure_entries(layout_, slot, p0 + S, keep, s);
  auto compress = [&](const DevCompressor& cw, const CompressorShape& cs, DevCompressorState& ring, float* entries,
                      bool indexer) {
    float* ckv = ws_.get<float>(static_cast<size_t>(S * cs.width));
    float* cg = ws_.get<float>(static_cast<size_t>(S * cs.width));
    lin(cw.wkv, x, S, ckv, false, false);  // BF16 weights, f32 math (spec §3.0)
    lin(cw.wgate, x, S, cg, false, false);
    DSV4_CUDA_CHECK(compressor_add_ape(cg, cw.ape, S, cs.width, p0, cs.ratio, s));
    CompressorArgs c;
    c.kv = ckv;
    c.gate = cg;
    c.ring_kv = ring.kv.as<float>();
    c.ring_gate = ring.gate.as<float>();
    c.ring = cs.ring;
    c.ratio = cs.ratio;
    c.d = cs.dim;
    c.width = cs.width;
    c.norm = cw.norm;
    c.norm_eps = eps;
    c.inv_freq = inv;
    c.rope_dim = static_cast<int>(rd);
    c.official = off;
    c.indexer = indexer;
    c.p0 = p0;
    c.S = S;
    c.entries = entries;
    DSV4_CUDA_CHECK(compressor_close(c, s));
    // The rows this chunk leaves for later windows (after the closes, which read the old ones).
    DSV4_CUDA_CHECK(ring_store(ckv, S, cs.width, p0, ring.kv.as<float>(), cs.ring, s));
    DSV4_CUDA_CHECK(ring_store(cg, S, cs.width, p0, ring.gate.as<float>(), cs.ring, s));
  };
  if (L.has_compressor) compress(L.compressor, shape.main, ls.main, ls.entries.as<float>(), false);
  const int topk = cfg_.index_topk;
  int32_t* sel = nullptr;
  int32_t* n_sel = nullptr;
  if (L.has_indexer) {
    compress(L.idx_compressor, shape.index, ls.index, ls.idx_keys.as<float>(), true);
    const int64_t ih = cfg_.index_n_heads, ihd = cfg_.index_head_dim, nkeys = (p0 + S) / 4;
    float* iq = ws_.get<float>(static_cast<size_t>(S * ih * ihd));
    float* iw = ws_.get<float>(static_cast<size_t>(S * ih));
    sel = ws_.get<int32_t>(static_cast<size_t>(S * topk));
    n_sel = ws_.get<int32_t>(static_cast<size_t>(S));
    // Queries that see at most top-k entries select all of them and need no scores.
    if ((p0 + S) / 4 > topk) {
      lin(L.idx_wq_b, qr, S, iq, off, off);
      lin(L.idx_weights_proj, x, S, iw, false, off);  // [OFF]: bf16 GEMM, bf16 weights
    }
    const int64_t per = std::max<int64_t>(
        1, static_cast<int64_t>(kIndexerScratchBytes / sizeof(float) / static_cast<size_t>(std::max<int64_t>(nkeys, 1))));
    const int64_t sq_max = std::min(S, per);
    float* scratch = ws_.get<float>(static_cast<size_t>(indexer_scratch_floats(sq_max, nkeys)));
    for (int64_t q0 = 0; q0 < S; q0 += sq_max) {
      IndexerArgs ia;
      ia.q = iq + q0 * ih * ihd;
      ia.w = iw + q0 * ih;
      ia.keys = ls.idx_keys.as<float>();
      ia.nkeys = nkeys;
      ia.heads = static_cast<int>(ih);
      ia.head_dim = static_cast<int>(ihd);
      ia.rope_dim = static_cast<int>(rd);
      ia.topk = topk;
      ia.inv_freq = inv;
      ia.official = off;
      ia.p0 = p0 + q0;
      ia.S = std::min(sq_max, S - q0);
      ia.sel = sel + q0 * topk;
      ia.n_sel = n_sel + q0;
      ia.scratch = scratch;
      DSV4_CUDA_CHECK(indexer_select(ia, s));
    }
  }

  // §3.5.7 sparse attention with sink, then inverse RoPE at the query position.
  float* o = ws_.get<float>(static_cast<size_t>(S * H * hd));
  AttentionArgs aa;
  aa.q = q;
  aa.kv = kv;
  aa.window = ls.window.as<float>();
  aa.window_ring = shape.window_ring;
  aa.W = shape.window;
  aa.ratio = L.spec.compress_ratio;
  aa.entries = ls.entries.as<float>();
  aa.n_entries = L.has_compressor ? (p0 + S) / L.spec.compress_ratio : 0;
  aa.sel = sel;
  aa.n_sel = n_sel;
  aa.topk = topk;
  aa.sink = L.sink;
  aa.H = static_cast<int>(H);
  aa.hd = static_cast<int>(hd);
  aa.official = off;
  aa.p0 = p0;
  aa.S = S;
  aa.o = o;
  aa.no_mma = no_mma_;
  DSV4_CUDA_CHECK(sparse_attention(aa, s));
  DSV4_CUDA_CHECK(rope(o, S * H, hd, hd - rd, static_cast<int>(rd), inv, p0, H, true, off, s));

  // §3.5.8 grouped low-rank output projection: group g (heads g·H/G …) through its wo_a rows;
  // [OFF]: wo_a dequantised exactly with bf16 activations (no FP8 quantisation), bf16 u.
  const int64_t G = cfg_.o_groups, orr = cfg_.o_lora_rank;
  float* u = ws_.get<float>(static_cast<size_t>(S * G * orr));
  LinearArgs la;
  la.w = L.wo_a;
  la.x = o;
  la.x_stride = H * hd;
  la.y = u;
  la.y_stride = G * orr;
  la.rows = S;
  la.out_group = orr;
  la.bf16_out = off;
  run_linear(la);
  lin(L.wo_b, u, S, a, off, off);

  // §4.1 the window ring keeps the last W + rollback keys (slot = position mod ring).
  DSV4_CUDA_CHECK(ring_store(kv, S, hd, p0, ls.window.as<float>(), shape.window_ring, s));
}

void CudaBackend::moe(const DevLayer& L, const float* x, const int32_t* tokens_d, int64_t S, float* f) {
  const int64_t D = cfg_.hidden_size, I = cfg_.moe_intermediate_size, Is = I * cfg_.n_shared_experts;
  const int K = cfg_.experts_per_token;
  const bool off = official_;
  cudaStream_t s = stream();

  // The shared expert, unclamped (the official semantics), added last by moe_combine. Decode-size
  // chunks run it on the second side stream, beside the router and the routed experts (both only
  // read x; neither saturates HBM alone at one token).
  float* ysh = ws_.get<float>(static_cast<size_t>(S * D));
  const bool fork = moe_fork_ && S < kGemmMinRows;
  cudaStream_t ss = fork ? side2_->get() : s;
  if (fork) {
    DSV4_CUDA_CHECK(cudaEventRecord(fork2_ev_->get(), s));
    DSV4_CUDA_CHECK(cudaStreamWaitEvent(ss, fork2_ev_->get(), 0));
  }
  {
    float* gs = ws_.get<float>(static_cast<size_t>(S * Is));
    if (L.has_sh_w13) {
      float* gus = ws_.get<float>(static_cast<size_t>(S * 2 * Is));
      lin(L.sh_w13, x, S, gus, off, off, fork ? ss : nullptr);
      DSV4_CUDA_CHECK(swiglu(gus, gus + Is, nullptr, nullptr, S, Is, 0.0f, false, off, gs, ss, 2 * Is));
    } else {
      float* us = ws_.get<float>(static_cast<size_t>(S * Is));
      lin(L.sh_w1, x, S, gs, off, off, fork ? ss : nullptr);
      lin(L.sh_w3, x, S, us, off, off, fork ? ss : nullptr);
      DSV4_CUDA_CHECK(swiglu(gs, us, nullptr, nullptr, S, Is, 0.0f, false, off, gs, ss));
    }
    lin(L.sh_w2, gs, S, ysh, off, off, fork ? ss : nullptr);
  }
  if (fork) DSV4_CUDA_CHECK(cudaEventRecord(join2_ev_->get(), ss));

  // Router: sqrt-softplus scores, hash or biased top-K selection, renormalised weights × scale.
  int32_t* ids = ws_.get<int32_t>(static_cast<size_t>(S * K));
  float* wts = ws_.get<float>(static_cast<size_t>(S * K));
  RouterParams rp;
  rp.gate = L.gate;
  rp.bias = L.bias;
  rp.tid2eid = L.tid2eid;
  rp.tid2eid_cols = L.tid2eid_cols;
  rp.E = cfg_.n_routed_experts;
  rp.K = K;
  rp.D = D;
  rp.norm_topk_prob = cfg_.norm_topk_prob;
  rp.routed_scale = static_cast<float>(cfg_.routed_scaling_factor);
  if (S <= kSplitMixTokens || gemm_) {  // the logits as a linear over many CTAs / a GEMM (f32 gate [E, D])
    WeightView gw;
    gw.format = WeightFormat::f32;
    gw.out = rp.E;
    gw.in = D;
    gw.data = reinterpret_cast<const uint8_t*>(L.gate);
    float* logits = ws_.get<float>(static_cast<size_t>(S * rp.E));
    lin(gw, x, S, logits, false, false);
    rp.logits = logits;
  }
  DSV4_CUDA_CHECK(router(rp, x, tokens_d, S, ids, wts, s));

  // Expert parallelism: this rank computes only its own experts — the router's ids as local numbers
  // of its arena, −1 (skipped by every expert kernel and by the combine) for the other ranks'.
  const DevExperts& E = L.experts;
  const bool ep = ep_.transport != nullptr;
  if (ep) {
    int32_t* local = ws_.get<int32_t>(static_cast<size_t>(S * K));
    DSV4_CUDA_CHECK(ep_local_ids(ids, S * K, E.first, E.first + E.count, local, s));
    ids = local;
  }

  // Routed experts, one row per (token, slot): w1 / w3 of the slot's expert, SwiGLU, w2.
  const int32_t* x_rows = slot_rows_;  // slot r reads token r / K (uploaded once per chunk)
  float* ys = ws_.get<float>(static_cast<size_t>(S * K * D));
  const int32_t* y_rows = nullptr;
  const bool grouped = gemm_ && S >= kGemmMinRows;  // prefill chunks: the slots grouped by expert
  auto expert_lin = [&](const WeightView& w, int64_t ds, int64_t ss, const float* in, const int32_t* xr, float* out) {
    LinearArgs a;
    a.w = w;
    a.expert_ids = ids;
    a.expert_data_stride = ds;
    a.expert_scale_stride = ss;
    a.x = in;
    a.x_stride = w.in;
    a.x_rows = xr;
    a.y = out;
    a.y_stride = w.out;
    a.rows = S * K;
    a.quant_act = off;
    a.bf16_out = off;
    DSV4_CUDA_CHECK(linear(a, s));
  };
  if (grouped) {
    experts_gemm(E, x, ids, wts, S, ys, y_rows);
  } else if (E.has_w13) {  // w1|w3 as one weight: g and u side by side in one output row
    const float limit = static_cast<float>(cfg_.swiglu_limit);
    float* gu = ws_.get<float>(static_cast<size_t>(S * K * 2 * I));
    float* h = ws_.get<float>(static_cast<size_t>(S * K * I));
    expert_lin(E.w13, E.w1_data_stride, E.w1_scale_stride, x, x_rows, gu);
    DSV4_CUDA_CHECK(swiglu(gu, gu + I, ids, wts, S * K, I, limit, cfg_.swiglu_limit > 0, off, h, s, 2 * I));
    expert_lin(E.w2, E.w2_data_stride, E.w2_scale_stride, h, nullptr, ys);
  } else {
    float* g = ws_.get<float>(static_cast<size_t>(S * K * I));
    float* up = ws_.get<float>(static_cast<size_t>(S * K * I));
    expert_lin(E.w1, E.w1_data_stride, E.w1_scale_stride, x, x_rows, g);
    expert_lin(E.w3, E.w3_data_stride, E.w3_scale_stride, x, x_rows, up);
    const float limit = static_cast<float>(cfg_.swiglu_limit);
    DSV4_CUDA_CHECK(swiglu(g, up, ids, wts, S * K, I, limit, cfg_.swiglu_limit > 0, off, g, s));
    expert_lin(E.w2, E.w2_data_stride, E.w2_scale_stride, g, nullptr, ys);
  }

  if (fork) DSV4_CUDA_CHECK(cudaStreamWaitEvent(s, join2_ev_->get(), 0));
  if (!ep) {
    DSV4_CUDA_CHECK(moe_combine(ys, ids, wts, ysh, S, K, D, off, f, s, y_rows));
    return;
  }
  // This rank's f32 partial (its experts, ascending id), every rank's partial gathered, then the
  // same rank-order sum + shared expert + one rounding on every rank: identical replicas.
  const int W = ep_.world;
  float* part = ws_.get<float>(static_cast<size_t>(S * D));
  float* all = ws_.get<float>(static_cast<size_t>(W * S * D));
  DSV4_CUDA_CHECK(moe_combine(ys, ids, wts, nullptr, S, K, D, off, part, s, y_rows));
  ep_.transport->all_gather(part, all, static_cast<size_t>(S * D), s);
  DSV4_CUDA_CHECK(ep_reduce(all, W, S, D, ysh, off, f, s));
}

void CudaBackend::head_hidden(const DevHc& hcw, const float* norm, const float* X, int64_t rows, float* h) {
  const int64_t D = cfg_.hidden_size;
  HcParams hp = hc_params(hcw);
  hp.partials = hc_partials(hcw, X, rows);
  DSV4_CUDA_CHECK(hc_head(hp, X, rows, h, stream()));
  DSV4_CUDA_CHECK(rms_norm(h, D, norm, rows, D, static_cast<float>(cfg_.rms_norm_eps), official_, h, D, stream()));
}

void CudaBackend::forward_chunk(DevSequence& st, std::span<const int32_t> tok, const ForwardChunk& c,
                                ChunkResult& out) {
  const int64_t S = static_cast<int64_t>(tok.size()), p0 = st.position;
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, hcD = hc * D, V = cfg_.vocab_size;
  cudaStream_t s = stream();
  ws_.begin();
  int32_t* tokens = ws_.get<int32_t>(static_cast<size_t>(S));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(tokens, tok.data(), static_cast<size_t>(S) * 4, cudaMemcpyHostToDevice, s));
  upload_slot_rows(S);

  // §3.1 embedding, copied into every HC stream.
  float* X = ws_.get<float>(static_cast<size_t>(S * hcD));
  float* Xn = ws_.get<float>(static_cast<size_t>(S * hcD));
  DSV4_CUDA_CHECK(embed(w_.embed, w_.embed_f32, tokens, S, D, static_cast<int>(hc), official_, X, s));
  std::vector<float> block;
  if (c.hidden_out) c.hidden_out->clear();

  // §3.2 decoder layers.
  for (int l = 0; l < cfg_.num_layers; ++l) {
    if (c.hidden_out) {
      to_host(block, X, static_cast<size_t>(S * hcD), s);
      DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
      c.hidden_out->insert(c.hidden_out->end(), block.begin(), block.end());
    }
    const Workspace::Mark layer_start = ws_.mark();  // a layer's activations die with it
    decoder_block(w_.layers[static_cast<size_t>(l)], static_cast<size_t>(l), st, X, Xn, tokens, S, p0, p0);
    ws_.rewind(layer_start);
  }
  if (c.final_streams_out) to_host(*c.final_streams_out, X, static_cast<size_t>(S * hcD), s);

  // §3.7 head: HC collapse, final norm, logits for the rows asked for (and the sampled row).
  const bool sample = c.sampler != nullptr;
  const int64_t out_rows = c.logits == LogitsMode::none ? 0 : c.logits == LogitsMode::last ? 1 : S;
  const int64_t head_rows = std::max<int64_t>(out_rows, sample ? 1 : 0);
  const int64_t first = c.hidden_out ? 0 : S - head_rows;
  const int64_t rows = c.hidden_out ? S : head_rows;
  float* h = ws_.get<float>(static_cast<size_t>(std::max<int64_t>(rows, 1) * D));
  std::vector<float> local;
  std::vector<float>& logits = c.logits_out && out_rows == head_rows ? *c.logits_out : local;
  logits.clear();
  if (rows > 0) {
    head_hidden(w_.hc_head, w_.norm, X + first * hcD, rows, h);
    if (c.hidden_out) {
      to_host(block, h, static_cast<size_t>(rows * D), s);
      DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
      c.hidden_out->insert(c.hidden_out->end(), block.begin(), block.end());
    }
  }
  if (head_rows > 0) {
    float* lg = ws_.get<float>(static_cast<size_t>(head_rows * V));
    lin(w_.head, h + (rows - head_rows) * D, head_rows, lg, false, false);
    to_host(logits, lg, static_cast<size_t>(head_rows * V), s);
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));  // every launch of the chunk has finished here
  DSV4_CUDA_CHECK(cudaGetLastError());
  if (c.logits_out && &logits != c.logits_out) c.logits_out->clear();  // mode none: no rows
  if (sample)
    out.sample = c.sampler->sample(std::span<const float>(logits).subspan(static_cast<size_t>((head_rows - 1) * V)),
                                   *c.sampler_state);
  st.tokens.insert(st.tokens.end(), tok.begin(), tok.end());
  if (sample) st.last_sample = out.sample.id;
  st.position += S;
}

void CudaBackend::forward_mtp(SeqHandle handle, std::span<const float> final_streams,
                              std::span<const int32_t> next_tokens, std::vector<float>& logits_out) {
  std::lock_guard<std::mutex> lk(mu_);
  check_mtp_inputs(cfg_, final_streams, next_tokens);
  DSV4_CUDA_CHECK(cudaSetDevice(device_));
  DevSequence& st = seq(handle);
  const int64_t n = static_cast<int64_t>(next_tokens.size());
  const int64_t D = cfg_.hidden_size, hc = cfg_.hc_mult, hcD = hc * D, V = cfg_.vocab_size;
  const DevMtp& m = *w_.mtp;
  const int64_t p0 = st.mtp_position;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  const bool off = official_;
  cudaStream_t s = stream();
  ws_.begin();

  // §3.8: e = enorm(embed[t_{i+1}]), hn[j] = hnorm(X_i[j]), Y[j] = e_proj(e) + h_proj(hn[j]).
  int32_t* tokens = ws_.get<int32_t>(static_cast<size_t>(n));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(tokens, next_tokens.data(), static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, s));
  upload_slot_rows(n);
  float* e = ws_.get<float>(static_cast<size_t>(n * D));
  float* ep = ws_.get<float>(static_cast<size_t>(n * D));
  DSV4_CUDA_CHECK(embed(w_.embed, w_.embed_f32, tokens, n, D, 1, off, e, s));
  DSV4_CUDA_CHECK(rms_norm(e, D, m.enorm, n, D, eps, off, e, D, s));
  lin(m.e_proj, e, n, ep, off, off);
  float* hn = ws_.get<float>(static_cast<size_t>(n * hcD));
  float* hp = ws_.get<float>(static_cast<size_t>(n * hcD));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(hn, final_streams.data(), final_streams.size() * 4, cudaMemcpyHostToDevice, s));
  DSV4_CUDA_CHECK(rms_norm(hn, D, m.hnorm, n * hc, D, eps, off, hn, D, s));
  lin(m.h_proj, hn, n * hc, hp, off, off);
  // Y[i, j] = ep[i] + hp[i, j]: hc_post with post = 1 and comb = identity computes exactly that
  // sum (one f32 add, then the official bf16 rounding).
  std::vector<float> ones(static_cast<size_t>(n * hc), 1.0f), eye(static_cast<size_t>(n * hc * hc), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < hc; ++j) eye[static_cast<size_t>((i * hc + j) * hc + j)] = 1.0f;
  float* post = ws_.get<float>(ones.size());
  float* comb = ws_.get<float>(eye.size());
  DSV4_CUDA_CHECK(cudaMemcpyAsync(post, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice, s));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(comb, eye.data(), eye.size() * 4, cudaMemcpyHostToDevice, s));
  float* Y = ws_.get<float>(static_cast<size_t>(n * hcD));
  float* Yn = ws_.get<float>(static_cast<size_t>(n * hcD));
  DSV4_CUDA_CHECK(hc_post(hc_params(m.hc_head), ep, hp, post, comb, n, Y, s));

  // The MTP block on its own window state, then its own HC head and norm with the shared LM head.
  decoder_block(m.block, static_cast<size_t>(cfg_.num_layers), st, Y, Yn, tokens, n, p0, p0);
  float* h = ws_.get<float>(static_cast<size_t>(n * D));
  head_hidden(m.hc_head, m.norm, Y, n, h);
  float* lg = ws_.get<float>(static_cast<size_t>(n * V));
  lin(w_.head, h, n, lg, false, false);
  to_host(logits_out, lg, static_cast<size_t>(n * V), s);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  st.mtp_position += n;
}

}  // namespace dsv4::cuda
