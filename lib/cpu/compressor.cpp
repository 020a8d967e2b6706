// The KV compressor state machine (spec §3.5.5, §4.2), shared by the main and the indexer
// compressor. Tokens are fed strictly in position order, so any chunking of a sequence (full
// prefill, chunks at any start, single tokens) leaves identical state and emits identical entries.
// CSA (ratio 4, overlap): a close reads the previous window's rows (features [0, d)) and its own
// (features [d, 2d)); HCA: its own m rows, features [0, d). Raw rows live in a ring indexed by
// position (include/dsv4/cpu/state.hpp), which also makes truncation exact.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {

void compressor_append(const CompressorParams& c, CompressorState& st, const float* x, int64_t S, int64_t p0,
                       std::vector<float>& entries, ThreadPool& pool) {
  const int m = c.shape.ratio, d = c.shape.dim;
  const int64_t width = c.shape.width, ring = c.shape.ring;
  const bool overlap = width == 2 * static_cast<int64_t>(d);
  std::vector<float> kv(static_cast<size_t>(S * width)), g(static_cast<size_t>(S * width));
  linear(c.w->wkv, x, S, kv.data(), pool);
  linear(c.w->wgate, x, S, g.data(), pool);

  // A close reads the raw rows of the last `span` positions: CSA the previous window's [0, d)
  // features then the own window's [d, 2d), HCA its own window. Positions before 0 do not exist
  // (an empty previous window weighs nothing, spec §4.1).
  const int span = overlap ? 2 * m : m;
  std::vector<float> pooled(static_cast<size_t>(d));
  std::vector<double> logit(static_cast<size_t>(span)), val(static_cast<size_t>(span));
  for (int64_t t = 0; t < S; ++t) {
    const int64_t p = p0 + t;
    const int off = static_cast<int>(p % m);
    const int64_t slot = p % ring;
    const float* ape = c.w->ape.data() + off * width;
    for (int64_t e = 0; e < width; ++e) {
      st.kv[slot * width + e] = kv[t * width + e];
      st.gate[slot * width + e] = g[t * width + e] + ape[e];  // ape biases the gate logits only
    }
    if ((p + 1) % m != 0) continue;
    // Window closed: per feature, softmax over the window's rows of the gate logits, weights on kv.
    const int64_t first = p + 1 - span;
    const int s0 = first < 0 ? static_cast<int>(-first) : 0;
    for (int e = 0; e < d; ++e) {
      for (int s = s0; s < span; ++s) {
        const int64_t col = overlap ? (s < m ? e : d + e) : e;
        const int64_t r = (first + s) % ring;
        logit[s] = st.gate[r * width + col];
        val[s] = st.kv[r * width + col];
      }
      double mx = -INFINITY;
      for (int s = s0; s < span; ++s) mx = std::max(mx, logit[s]);
      double den = 0, num = 0;
      for (int s = s0; s < span; ++s) {
        const double wgt = std::exp(logit[s] - mx);
        den += wgt;
        num += wgt * val[s];
      }
      pooled[e] = static_cast<float>(num / den);
      if (c.official) pooled[e] = round_bf16(pooled[e]);  // bf16 before the norm (spec §3.5.5)
    }
    rms_norm(pooled.data(), c.w->norm.data(), d, c.norm_eps, pooled.data(), c.official);
    c.rope->apply(pooled.data() + d - c.rope_dim, p + 1 - m, false, c.official);  // the window's first position
    if (c.official) {
      if (c.indexer) {  // indexer keys: Hadamard, then FP4 simulation (§5.3)
        hadamard_bf16(pooled.data(), d);
        fp4_simulate_bf16(pooled.data(), d);
      } else {          // main entries: FP8 simulation of the non-rope dims (§5.2)
        fp8_simulate_bf16(pooled.data(), d - c.rope_dim);
      }
    }
    entries.insert(entries.end(), pooled.begin(), pooled.end());
  }
}

}  // namespace dsv4::cpu
