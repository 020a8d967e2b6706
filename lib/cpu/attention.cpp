// Attention_L (spec §3.5) for a chunk of S tokens at absolute positions p0…p0+S−1: query path with
// the per-head unweighted norm, the shared K=V entry, partial RoPE, the compressors (CSA + indexer
// or HCA), sparse attention with sink over window ∪ compressed keys, inverse RoPE on the output and
// the grouped low-rank output projection, in reference or official numerics (AttnContext::official,
// rounding points of spec §7.2). Each query sees exactly the keys of its own position
// (window from ring buffer + chunk, entries visible at ⌊(p+1)/m⌋), so any chunking is exact.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {

void attention(const AttnContext& c, LayerState& st, const float* x, int64_t S, int64_t p0, float* a) {
  const ModelConfig& cfg = *c.cfg;
  const AttnWeights& w = c.layer->attn;
  const LayerSpec& spec = c.layer->spec;
  ThreadPool& pool = *c.pool;
  const int64_t H = cfg.num_heads, hd = cfg.head_dim, rd = cfg.rope_dim, W = c.shape->window;
  const int64_t Wr = c.shape->window_ring;  // ring slots: W + rollback
  const int64_t qlr = cfg.q_lora_rank;
  const double eps = cfg.rms_norm_eps;

  // §3.5.1 query path: qr feeds wq_b and the indexer.
  const bool off = c.official;
  const LinearOut fp8 = off ? LinearOut::fp8_bf16 : LinearOut::f32;
  std::vector<float> qr(static_cast<size_t>(S * qlr)), q(static_cast<size_t>(S * H * hd));
  linear(w.wq_a, x, S, qr.data(), pool, fp8);
  for (int64_t s = 0; s < S; ++s)
    rms_norm(qr.data() + s * qlr, w.q_norm.data(), qlr, eps, qr.data() + s * qlr, off);
  linear(w.wq_b, qr.data(), S, q.data(), pool, fp8);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < H; ++h) {
      float* qh = q.data() + (s * H + h) * hd;
      if (off) head_rms_norm_bf16(qh, hd, static_cast<float>(eps));  // [OFF]: bf16 tensor arithmetic
      else rms_norm(qh, nullptr, hd, eps, qh);                        // per-head norm without weight
      c.rope->apply(qh + hd - rd, p0 + s, false, off);
    }

  // §3.5.2 the single shared K=V head.
  std::vector<float> kv(static_cast<size_t>(S * hd));
  linear(w.wkv, x, S, kv.data(), pool, fp8);
  for (int64_t s = 0; s < S; ++s) {
    float* k = kv.data() + s * hd;
    rms_norm(k, w.kv_norm.data(), hd, eps, k, off);
    c.rope->apply(k + hd - rd, p0 + s, false, off);
    if (off) fp8_simulate_bf16(k, hd - rd);  // §5.2 (e4m3 version): non-rope dims only
  }

  // §3.5.5 / §3.5.6 compressed keys: feed the whole chunk first (entries are append-only and each
  // query only looks at those visible at its own position).
  std::vector<std::vector<int32_t>> selected;
  if (w.has_compressor) {
    CompressorParams cp{c.shape->main, &w.compressor, c.rope, static_cast<int>(rd), eps, off, false};
    compressor_append(cp, st.main, x, S, p0, st.entries, pool);
  }
  if (w.has_indexer) {
    CompressorParams ic{c.shape->index, &w.idx_compressor, c.rope, static_cast<int>(rd), eps, off, true};
    compressor_append(ic, st.index, x, S, p0, st.idx_keys, pool);
    IndexerParams ip{&w, c.rope, cfg.index_n_heads, cfg.index_head_dim, static_cast<int>(rd), cfg.index_topk,
                     c.torch_cpu_ties};
    ip.torch_cpu_row = c.torch_cpu_row;
    ip.official = off;
    std::vector<uint8_t> tied(static_cast<size_t>(S), 0);
    ip.tied = &tied;
    selected = indexer_select(ip, st.idx_keys, x, qr.data(), S, p0, pool);
    if (c.tie_positions)
      for (int64_t s = 0; s < S; ++s)
        if (tied[s]) c.tie_positions->push_back(p0 + s);
  }
  const int64_t ratio = spec.compress_ratio;
  const int64_t n_entries = static_cast<int64_t>(st.entries.size()) / hd;

  // §3.5.7 sparse attention with sink, then inverse RoPE at the query position.
  std::vector<float> o(static_cast<size_t>(S * H * hd));
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  pool.parallel_for(S, 1, [&](int64_t b, int64_t e) {
    std::vector<const float*> keys;
    std::vector<double> logits, acc(static_cast<size_t>(hd));
    for (int64_t s = b; s < e; ++s) {
      const int64_t p = p0 + s;
      keys.clear();
      for (int64_t pos = std::max<int64_t>(0, p - W + 1); pos <= p; ++pos)
        keys.push_back(pos < p0 ? st.window.data() + (pos % Wr) * hd : kv.data() + (pos - p0) * hd);
      if (spec.attn == AttnKind::hca) {
        const int64_t vis = std::min(n_entries, (p + 1) / ratio);
        for (int64_t i = 0; i < vis; ++i) keys.push_back(st.entries.data() + i * hd);
      } else if (spec.attn == AttnKind::csa) {
        for (int32_t i : selected[static_cast<size_t>(s)]) keys.push_back(st.entries.data() + i * hd);
      }
      logits.resize(keys.size());
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = q.data() + (s * H + h) * hd;
        const double sink = w.sink[static_cast<size_t>(h)];
        // Reference: the max includes the sink; [OFF]: real keys only (the same softmax).
        double mx = off && !keys.empty() ? -INFINITY : sink;
        for (size_t j = 0; j < keys.size(); ++j) {
          logits[j] = off ? static_cast<double>(static_cast<float>(dot(qh, keys[j], hd) * scale))
                          : dot(qh, keys[j], hd) * scale;
          mx = std::max(mx, logits[j]);
        }
        double den = std::exp(sink - mx);  // the sink adds to the denominator only
        std::fill(acc.begin(), acc.end(), 0.0);
        for (size_t j = 0; j < keys.size(); ++j) {
          double pj = std::exp(logits[j] - mx);
          den += pj;
          if (off) pj = round_bf16(static_cast<float>(pj));  // [OFF]: bf16 P for P·V, f32 denominator
          for (int64_t d = 0; d < hd; ++d) acc[d] += pj * keys[j][d];
        }
        float* oh = o.data() + (s * H + h) * hd;
        for (int64_t d = 0; d < hd; ++d) {
          const float v = static_cast<float>(acc[d] / den);
          oh[d] = off ? round_bf16(v) : v;
        }
        c.rope->apply(oh + hd - rd, p, /*inverse=*/true, off);
      }
    }
  });

  // §3.5.8 grouped low-rank output projection: group g (heads g·H/G …) through its wo_a rows.
  const int64_t G = cfg.o_groups, orr = cfg.o_lora_rank, gin = H * hd / G;
  std::vector<float> u(static_cast<size_t>(S * G * orr));
  pool.parallel_for(G * orr, 8, [&](int64_t b, int64_t e) {
    std::vector<float> buf(w.wo_a.dense.empty() ? static_cast<size_t>(gin) : 0);
    for (int64_t r = b; r < e; ++r) {
      const float* row = w.wo_a.row(r, buf.data());
      const int64_t g = r / orr;
      for (int64_t s = 0; s < S; ++s) {
        const float v = static_cast<float>(dot(o.data() + s * H * hd + g * gin, row, gin));
        u[static_cast<size_t>(s * G * orr + r)] = off ? round_bf16(v) : v;  // [OFF]: bf16 GEMM, bf16 u
      }
    }
  });
  linear(w.wo_b, u.data(), S, a, pool, fp8);

  // §4.1 the window ring keeps the last W + rollback keys (slot = position mod ring).
  for (int64_t s = std::max<int64_t>(0, S - Wr); s < S; ++s)
    std::copy(kv.begin() + s * hd, kv.begin() + (s + 1) * hd, st.window.begin() + ((p0 + s) % Wr) * hd);
}

}  // namespace dsv4::cpu
