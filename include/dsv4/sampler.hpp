// Token sampling from a logits row: penalties, temperature, top-k, top-p, min-p, seeded RNG.
// Deterministic for a seed. Greedy when temperature == 0 (ties: lowest id). A Sampler owns its RNG
// state; it is not thread-safe (one per generation).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace dsv4 {

struct SamplerParams {
  float temperature = 1.0f;        // 0 = greedy
  int top_k = 0;                   // 0 = off
  float top_p = 1.0f;              // 1 = off
  float min_p = 0.0f;              // 0 = off; keep tokens with p ≥ min_p · p_max
  float repetition_penalty = 1.0f; // 1 = off; CTRL-style: logit/pen if > 0 else logit·pen, over history
  float frequency_penalty = 0.0f;  // OpenAI-style: − count · freq
  float presence_penalty = 0.0f;   // − (count > 0) · presence
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  // `history`: tokens the penalties apply to (prompt + generated, as the caller chooses).
  // Throws Error(invalid_argument) on invalid parameters or an empty row.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  uint64_t state_;
  std::vector<float> work_;
  std::vector<int32_t> idx_;
};

}  // namespace dsv4
