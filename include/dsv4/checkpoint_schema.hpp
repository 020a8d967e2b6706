// The tensor inventory a DeepSeek-V4 checkpoint must hold for a given config (spec §2.4), and the
// validation of a Checkpoint against it. One list drives both the validator and the random-model
// generator, so they cannot disagree. Shapes follow the on-disk layout: FP8 weights [out, in] with
// e8m0 scales [ceil(out/128), ceil(in/128)]; FP4 experts as I8 [out, in/2] with scales
// [out, ceil(in/32)]; `tid2eid` [V, K] I64 (I32 accepted; K ≥ experts in use).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/safetensors.hpp"

namespace dsv4 {

// What a tensor holds, so that a generator knows how to fill it and a census how to group it.
enum class TensorRole : uint8_t {
  embedding,      // BF16 rows of the vocabulary
  linear_bf16,    // BF16 [out, in] weight used as a linear layer
  fp8_weight,     // F8_E4M3 [out, in]
  fp8_scale,      // F8_E8M0 per 128×128 block of the preceding fp8_weight
  fp4_weight,     // I8 [out, in/2] packed e2m1 pairs
  fp4_scale,      // F8_E8M0 per 1×32 of the preceding fp4_weight
  norm,           // BF16 [n] RMSNorm weight
  hc_fn,          // F32 [mix, hc*D]
  hc_base,        // F32 [mix]
  hc_scale,       // F32 [3] or [1]
  sink,           // F32 [H]
  ape,            // F32 [m, c*d] compressor gate bias by window offset
  router_bias,    // F32 [E]
  tid2eid,        // I64 [V, K] expert ids
};

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  TensorRole role;
  int64_t fan_in = 0;  // logical input width for weights (for initialisation scaling)
};

// Every tensor the checkpoint must hold, in a stable order (top level, layers, MTP).
// `tid2eid_cols` is the column count to emit for tid2eid (the generator's K); validation accepts any
// count ≥ cfg.experts_per_token.
std::vector<TensorSpec> expected_tensors(const ModelConfig& cfg, int tid2eid_cols = -1);

struct ValidationReport {
  std::vector<std::string> problems;  // every mismatch, missing or unexpected tensor
  std::vector<std::string> notes;     // non-fatal observations (e.g. a repeated id in a tid2eid row)
  bool ok() const { return problems.empty(); }
};

// Checks presence, dtype and shape of every expected tensor, reports unexpected tensors, and checks
// tid2eid values (ids in [0, E)). Reports all problems at once; never throws for content problems.
ValidationReport validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& cfg);

}  // namespace dsv4
