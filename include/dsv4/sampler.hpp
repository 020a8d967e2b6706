// Token sampling from a logits row: logit bias, penalties, temperature, top-k, min-p, top-p, one
// seeded draw, optional logprobs. O(V) per draw in the common cases (no full sort of the vocabulary,
// no per-draw allocation once the work buffers have grown). Deterministic for a seed.
//
// Order of operations (each step documented in docs/api.md "Sampling"):
//   logits → + logit_bias → repetition penalty (HF rule: l/p if l > 0 else l·p, over every token
//   the state has *seen*: prompt and generated) → frequency/presence penalties (OpenAI rule:
//   l −= count·frequency + (count > 0)·presence, over *generated* tokens only) → greedy
//   (temperature 0: argmax, lowest id on ties) or l / temperature → top-k → softmax → min-p
//   (keep p ≥ min_p·p_max) → top-p (smallest prefix of the ranking, by (logit desc, id asc),
//   whose mass reaches top_p) → a draw from the kept set with the state's splitmix64 stream (the
//   unfiltered paths use exact rejection sampling, so the number of stream values a draw takes
//   varies; the draws are deterministic for a seed on every x86-64 CPU).
// Logprobs (when asked) are the model's own distribution: log_softmax of the raw row, before bias,
// penalties, temperature and filters (vLLM's default "raw logprobs").
//
// The per-sequence part (RNG state, token counts) is a SamplerState the caller owns, so a backend
// can sample for many sequences in one step (include/dsv4/backend.hpp: ForwardChunk::sample).
// A Sampler holds validated parameters and reusable work buffers; it is not thread-safe.
#pragma once
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dsv4 {

struct SamplerParams {
  float temperature = 1.0f;         // 0 = greedy
  int top_k = 0;                    // 0 (or ≥ vocab) = off
  float top_p = 1.0f;               // 1 = off; in (0, 1]
  float min_p = 0.0f;               // 0 = off; keep tokens with p ≥ min_p · p_max; in [0, 1]
  float repetition_penalty = 1.0f;  // 1 = off; > 0; HF rule over seen tokens (prompt + generated)
  float frequency_penalty = 0.0f;   // OpenAI: − count · frequency, generated tokens only; [-2, 2]
  float presence_penalty = 0.0f;    // OpenAI: − (count > 0) · presence, generated tokens only; [-2, 2]
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logit of the id (ids < vocab)
  uint64_t seed = 0;
  int logprobs = -1;                // −1 = none; 0 = the sampled token's; n ≤ 20 = plus top-n alternatives
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t id = -1;
  float logprob = 0.0f;            // of `id` (when params.logprobs ≥ 0)
  std::vector<TokenLogprob> top;   // the top-n of the raw distribution, best first (ties: lower id)
};

// What a sequence carries from draw to draw. `seen` counts prompt + generated tokens (repetition
// penalty), `generated` only the sampled ones (frequency / presence). Plain value type: copy it to
// fork a sequence's sampling.
struct SamplerState {
  uint64_t rng = 0;
  std::unordered_map<int32_t, int32_t> seen, generated;
  // false: the counts are not kept (no penalty asks for them; saves a hash insert per token).
  bool counts = true;

  explicit SamplerState(uint64_t seed = 0, bool keep_counts = true) : rng(seed), counts(keep_counts) {}
  // Whether `p` needs the counts (any of the three penalties on).
  static bool needs_counts(const SamplerParams& p) {
    return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  }
  void add_prompt(std::span<const int32_t> ids) {
    if (counts)
      for (int32_t t : ids) ++seen[t];
  }
  void add_generated(int32_t id) {
    if (!counts) return;
    ++seen[id];
    ++generated[id];
  }
};

class Sampler {
 public:
  // Throws Error(invalid_argument) naming the field for an out-of-range parameter.
  explicit Sampler(const SamplerParams& p);
  const SamplerParams& params() const { return p_; }

  // One draw from `logits` (one row, V = size) with `state`'s RNG and counts; advances state.rng
  // and records the sampled id in `state` (add_generated). Throws Error(invalid_argument) for an
  // empty row or a logit_bias id ≥ V, Error(backend) for a NaN or +inf logit.
  SampleResult sample(std::span<const float> logits, SamplerState& state);

  // Convenience with the sampler's own state, penalties over `history` (every id in it counts as
  // seen and as generated). Kept for the C API's dsv4_sampler_sample.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplerParams p_;
  SamplerState own_;
  std::vector<float> work_;      // the processed row
  std::vector<int32_t> cand_;    // candidate ids (partial selection)
  std::vector<double> prob_;     // candidate probabilities
  std::vector<uint64_t> keys_;   // ranking keys (logit, id) of the candidates: integer compares
};

}  // namespace dsv4
