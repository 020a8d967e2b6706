// Token sampling (contract in include/dsv4/sampler.hpp). Order: penalties over the history →
// greedy (temperature 0: argmax, lowest id on ties) or temperature → top-k → softmax → min-p →
// top-p → one draw from a splitmix64 stream seeded by `seed`. Candidates are ordered by
// (logit desc, id asc) so every cut and the draw are deterministic for a seed.
#include "dsv4/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "dsv4/error.hpp"
#include "dsv4/rng.hpp"

namespace dsv4 {
Sampler::Sampler(const SamplerParams& p) : p_(p), state_(p.seed) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    fail(Status::invalid_argument, "sampler: temperature {} must be a finite value ≥ 0", p.temperature);
  if (p.top_k < 0) fail(Status::invalid_argument, "sampler: top_k {} must be ≥ 0", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail(Status::invalid_argument, "sampler: top_p {} must be in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail(Status::invalid_argument, "sampler: min_p {} must be in [0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    fail(Status::invalid_argument, "sampler: repetition_penalty {} must be > 0", p.repetition_penalty);
  if (!std::isfinite(p.frequency_penalty) || !std::isfinite(p.presence_penalty))
    fail(Status::invalid_argument, "sampler: frequency/presence penalties must be finite");
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (V == 0) fail(Status::invalid_argument, "sampler: empty logits row");
  work_.assign(logits.begin(), logits.end());
  // A NaN would break every comparison below (std::sort needs a strict weak order): treat it, and
  // +inf, as an error of the model rather than guess a token.
  for (int64_t i = 0; i < V; ++i)
    if (std::isnan(work_[static_cast<size_t>(i)]) || work_[static_cast<size_t>(i)] == INFINITY)
      fail(Status::backend, "sampler: logit of token {} is {} (the forward pass produced non-finite values)", i,
           work_[static_cast<size_t>(i)]);

  // Penalties, each token once per distinct occurrence count.
  if (p_.repetition_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    std::unordered_map<int32_t, int> count;
    for (int32_t t : history)
      if (t >= 0 && t < V) ++count[t];
    for (const auto& [t, n] : count) {
      float& l = work_[static_cast<size_t>(t)];
      if (p_.repetition_penalty != 1.0f) l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
      l -= static_cast<float>(n) * p_.frequency_penalty + p_.presence_penalty;
    }
  }

  if (p_.temperature == 0.0f) {
    int32_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (work_[static_cast<size_t>(i)] > work_[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
    return best;
  }

  idx_.resize(static_cast<size_t>(V));
  std::iota(idx_.begin(), idx_.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return work_[static_cast<size_t>(a)] != work_[static_cast<size_t>(b)] ? work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)]
                                                                          : a < b;
  };
  int64_t n = V;
  if (p_.top_k > 0 && p_.top_k < V) {
    n = p_.top_k;
    std::partial_sort(idx_.begin(), idx_.begin() + n, idx_.end(), better);
  } else {
    std::sort(idx_.begin(), idx_.end(), better);
  }
  // Softmax over the n candidates (sorted, so the first is the maximum).
  std::vector<double> prob(static_cast<size_t>(n));
  const double mx = work_[static_cast<size_t>(idx_[0])];
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    prob[i] = std::exp((work_[static_cast<size_t>(idx_[i])] - mx) / p_.temperature);
    sum += prob[i];
  }
  for (auto& v : prob) v /= sum;
  if (p_.min_p > 0.0f) {
    const double cut = p_.min_p * prob[0];
    int64_t keep = 1;
    while (keep < n && prob[keep] >= cut) ++keep;
    n = keep;
  }
  if (p_.top_p < 1.0f) {
    double cum = 0;
    int64_t keep = 0;
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += prob[i];
    while (keep < n) {
      cum += prob[keep++];
      if (cum >= p_.top_p * total) break;
    }
    n = keep;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += prob[i];
  const double u = static_cast<double>(splitmix64(state_) >> 11) * 0x1.0p-53 * total;
  double cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += prob[i];
    if (u < cum) return idx_[static_cast<size_t>(i)];
  }
  return idx_[static_cast<size_t>(n - 1)];
}

}  // namespace dsv4
