// Random-weight DeepSeek-V4 checkpoints in the exact upstream on-disk format (spec §2): FP8 e4m3
// weights with e8m0 128×128 block scales, FP4 e2m1 experts packed in I8 with 1×32 e8m0 scales,
// BF16/F32/I64 elsewhere, `mtp.0.*`, sharded with an index, plus config.json,
// generation_config.json and the tokenizer files. Deterministic for a seed (each tensor's stream
// is seeded by hash(seed, name)). Weights are scaled by 1/sqrt(fan_in) so activations stay O(1).
// Tensors are produced and written one at a time: memory stays at one tensor, even at Flash width.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/config.hpp"
#include "dsv4/log.hpp"

namespace dsv4 {

// "tiny": a 6-layer model [S S C4 H16 C4 H16] + MTP with the real 129,280-token vocabulary;
// "flash": the real DeepSeek-V4-Flash dimensions. Throws Error(invalid_argument) for other names.
ModelConfig preset_config(const std::string& preset);

struct GenerateOptions {
  uint64_t seed = 0;
  std::string out_dir;
  std::string tokenizer_json;       // copied as <out>/tokenizer.json; empty = none
  std::string tokenizer_config;     // copied as <out>/tokenizer_config.json when non-empty
  size_t max_shard_bytes = 1u << 30;
};

// Adjusts `cfg` for --layers / --experts / --experts-per-token (values ≤ 0 keep the preset's).
void apply_overrides(ModelConfig& cfg, int layers, int experts, int experts_per_token);

// The bytes make-model writes for one tensor of expected_tensors(cfg) (deterministic for seed and
// name); an FP8 / FP4 weight also yields its scale tensor's bytes in `scale_out`. Scale specs
// themselves are Error(internal): they come with their weight.
struct TensorSpec;
void generate_tensor(const ModelConfig& cfg, const TensorSpec& spec, uint64_t seed, std::vector<uint8_t>& bytes,
                     std::vector<uint8_t>& scale_out);

// Writes the checkpoint; returns the number of bytes of tensor data written.
size_t generate_model(const ModelConfig& cfg, const GenerateOptions& opt, const Logger& log);

}  // namespace dsv4
