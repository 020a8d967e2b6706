// The "null" backend: the whole Backend contract (sequences, steps, sampling results, memory
// accounting, truncate, snapshots) without any model computation. Logits rows are a deterministic
// function of (token, position); a sampled id is a hash of the sequence's last token and position
// (the chunk's Sampler is not run, its SamplerState records the id). It reads only the config, so
// scheduler and server overhead can be measured on any model folder, and scheduler tests run fast.
// Settings (BackendOptions::params): none.
#pragma once
#include <memory>
#include <string>

#include "dsv4/backend.hpp"

namespace dsv4 {

std::unique_ptr<Backend> make_null_backend(const std::string& dir, const ModelConfig& cfg, const BackendOptions& opt,
                                           const Logger& log);

// The id the null backend samples after `last_token` at `position` (exposed for tests).
int32_t null_backend_sample(int32_t last_token, int64_t position, int32_t vocab);

}  // namespace dsv4
