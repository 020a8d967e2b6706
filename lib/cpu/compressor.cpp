// The KV compressor state machine (spec §3.5.5, §4.2), shared by the main and the indexer
// compressor. Tokens are fed strictly in position order, so any chunking of a sequence (full
// prefill, chunks at any start, single tokens) leaves identical state and emits identical entries.
// CSA (ratio 4, overlap): rows 0..3 = previous window, rows 4..7 = current window, features
// [0, d) feed the next window and [d, 2d) the own window. HCA: rows 0..m−1, features [0, d).
#include <cmath>
#include <vector>

#include "dsv4/cpu/ops.hpp"

namespace dsv4::cpu {

void compressor_append(const CompressorParams& c, CompressorState& st, const float* x, int64_t S, int64_t p0,
                       std::vector<float>& entries, ThreadPool& pool) {
  const int m = c.shape.ratio, d = c.shape.dim;
  const int64_t width = c.shape.width;
  const bool overlap = width == 2 * static_cast<int64_t>(d);
  std::vector<float> kv(static_cast<size_t>(S * width)), g(static_cast<size_t>(S * width));
  linear(c.w->wkv, x, S, kv.data(), pool);
  linear(c.w->wgate, x, S, g.data(), pool);

  const int slots = overlap ? 8 : m;
  std::vector<float> pooled(static_cast<size_t>(d));
  std::vector<double> logit(static_cast<size_t>(slots)), val(static_cast<size_t>(slots));
  for (int64_t t = 0; t < S; ++t) {
    const int64_t p = p0 + t;
    const int off = static_cast<int>(p % m);
    const int64_t row = overlap ? 4 + off : off;
    const float* ape = c.w->ape.data() + off * width;
    for (int64_t e = 0; e < width; ++e) {
      st.kv[row * width + e] = kv[t * width + e];
      st.gate[row * width + e] = g[t * width + e] + ape[e];  // ape biases the gate logits only
    }
    if ((p + 1) % m != 0) continue;
    // Window closed: per feature, softmax over the slots of the gate logits, weights on kv.
    for (int e = 0; e < d; ++e) {
      for (int s = 0; s < slots; ++s) {
        const int64_t col = overlap ? (s < 4 ? e : d + e) : e;
        logit[s] = st.gate[s * width + col];
        val[s] = st.kv[s * width + col];
      }
      double mx = -INFINITY;
      for (int s = 0; s < slots; ++s) mx = std::max(mx, logit[s]);
      double den = 0, num = 0;
      for (int s = 0; s < slots; ++s) {
        const double wgt = std::exp(logit[s] - mx);  // an empty slot (gate −∞) weighs 0
        den += wgt;
        num += wgt * val[s];
      }
      pooled[e] = static_cast<float>(num / den);
    }
    rms_norm(pooled.data(), c.w->norm.data(), d, c.norm_eps, pooled.data());
    c.rope->apply(pooled.data() + d - c.rope_dim, p + 1 - m);  // the window's first position
    entries.insert(entries.end(), pooled.begin(), pooled.end());
    if (overlap) {
      // The current window becomes the previous one (its [0, d) part feeds the next entry).
      std::copy(st.kv.begin() + 4 * width, st.kv.begin() + 8 * width, st.kv.begin());
      std::copy(st.gate.begin() + 4 * width, st.gate.begin() + 8 * width, st.gate.begin());
    }
  }
}

}  // namespace dsv4::cpu
