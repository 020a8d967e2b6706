// The lightning indexer (spec §3.5.6): per query, score every visible indexer key with
// Σ_h w[h]·ReLU(q[h]·k) and keep the top-k. Official numerics: Hadamard + FP4 query, bf16 scores
// (ties to the lowest id). Reference-f32 mode: no Hadamard and no FP4 simulation
// (the Hadamard is orthonormal, so the unquantised scores are mathematically the same). Scores are
// accumulated in double so that near-ties resolve like the float64 oracle.
// Exact ties are common (every head's ReLU at 0 gives a score of exactly 0). Default: ties to the
// lowest id (torch CUDA / official kernels), independent of the chunk schedule. Optionally
// (torch_cpu_ties) the selection of torch's CPU topk, which the float64 fixtures were made with:
// ties fall where std::nth_element (or partial_sort, when k·64 ≤ n) leaves them in the oracle's row
// of the whole sequence's entries with the invisible ones at −∞ — same algorithm, comparator and
// row (its length from ForwardChunk::oracle_length), so every chunk schedule reproduces the
// fixtures exactly.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "dsv4/cpu/ops.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cpu {

std::vector<std::vector<int32_t>> indexer_select(const IndexerParams& ip, const std::vector<float>& keys,
                                                 const float* x, const float* qr, int64_t S, int64_t p0,
                                                 ThreadPool& pool) {
  const int64_t ih = ip.heads, ihd = ip.head_dim;
  const int64_t nkeys = static_cast<int64_t>(keys.size()) / ihd;
  std::vector<std::vector<int32_t>> sel(static_cast<size_t>(S));
  // Only queries that see more entries than top-k need scores; the rest select everything.
  bool any_choice = false;
  for (int64_t s = 0; s < S; ++s) any_choice |= (p0 + s + 1) / 4 > ip.topk;
  std::vector<float> q, wts;
  if (any_choice) {
    q.resize(static_cast<size_t>(S * ih * ihd));
    wts.resize(static_cast<size_t>(S * ih));
    linear(ip.w->idx_wq_b, qr, S, q.data(), pool, ip.official ? LinearOut::fp8_bf16 : LinearOut::f32);
    linear(ip.w->idx_weights_proj, x, S, wts.data(), pool, ip.official ? LinearOut::bf16 : LinearOut::f32);
  }
  const double wscale = 1.0 / std::sqrt(static_cast<double>(ihd)) / std::sqrt(static_cast<double>(ih));
  pool.parallel_for(S, 1, [&](int64_t b, int64_t e) {
    std::vector<double> score;
    std::vector<float> wI;
    std::vector<std::pair<double, int64_t>> queue;
    for (int64_t s = b; s < e; ++s) {
      const int64_t p = p0 + s;
      const int64_t count = std::min<int64_t>((p + 1) / 4, nkeys);
      std::vector<int32_t>& out = sel[static_cast<size_t>(s)];
      if (count <= ip.topk) {
        out.resize(static_cast<size_t>(count));
        std::iota(out.begin(), out.end(), 0);
        continue;
      }
      float* qs = q.data() + s * ih * ihd;
      for (int64_t h = 0; h < ih; ++h) {
        ip.rope->apply(qs + h * ihd + ihd - ip.rope_dim, p, false, ip.official);
        if (ip.official) {  // §5.3: Hadamard, then FP4 simulation of the query
          hadamard_bf16(qs + h * ihd, static_cast<int>(ihd));
          fp4_simulate_bf16(qs + h * ihd, ihd);
        }
      }
      score.assign(static_cast<size_t>(count), 0.0);
      if (!ip.official) {
        for (int64_t w = 0; w < count; ++w) {
          double acc = 0;
          for (int64_t h = 0; h < ih; ++h) {
            const double qk = dot(qs + h * ihd, keys.data() + w * ihd, ihd);
            acc += static_cast<double>(wts[s * ih + h]) * wscale * std::max(0.0, qk);
          }
          score[w] = acc;
        }
      } else {
        // [OFF]: bf16 q·k per head, × the bf16 weights in bf16, summed over heads into one bf16
        // score (f32 accumulation, one rounding).
        wI.resize(static_cast<size_t>(ih));
        for (int64_t h = 0; h < ih; ++h) wI[h] = round_bf16(wts[s * ih + h] * static_cast<float>(wscale));
        for (int64_t w = 0; w < count; ++w) {
          float acc = 0.0f;
          for (int64_t h = 0; h < ih; ++h) {
            const float qk = round_bf16(static_cast<float>(dot(qs + h * ihd, keys.data() + w * ihd, ihd)));
            acc += round_bf16(wI[h] * std::max(0.0f, qk));
          }
          score[w] = round_bf16(acc);
        }
      }
      // torch CPU topk over the row [visible scores | −∞ for entries this query cannot see].
      const int64_t row = ip.torch_cpu_ties ? std::max(nkeys, ip.torch_cpu_row) : nkeys;
      queue.resize(static_cast<size_t>(row));
      for (int64_t w = 0; w < row; ++w) queue[w] = {w < count ? score[w] : -INFINITY, w};
      const auto greater = [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& c) {
        return (std::isnan(a.first) && !std::isnan(c.first)) || a.first > c.first;
      };
      const int64_t k = ip.topk;
      if (!ip.torch_cpu_ties)
        std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), [](const auto& a, const auto& c) {
          return a.first != c.first ? a.first > c.first : a.second < c.second;
        });
      else if (k * 64 <= row)
        std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), greater);
      else
        std::nth_element(queue.begin(), queue.begin() + (k - 1), queue.end(), greater);
      if (ip.tied) {
        // Boundary tie: the smallest selected score equals the largest score left out.
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < k; ++i) lo = std::min(lo, queue[i].first);
        for (int64_t i = k; i < row; ++i) hi = std::max(hi, queue[i].first);
        (*ip.tied)[static_cast<size_t>(s)] = lo == hi;
      }
      out.resize(static_cast<size_t>(k));
      for (int64_t i = 0; i < k; ++i) out[i] = static_cast<int32_t>(queue[i].second);
      std::sort(out.begin(), out.end());
    }
  });
  return sel;
}

}  // namespace dsv4::cpu
