// ModelConfig: every number of a DeepSeek-V4 model, parsed from config.json, plus the derived
// per-layer schedule (sliding / CSA / HCA attention, hash / score routing) and RoPE tables.
//
// Accepted namings (spec §1.1): the upstream root config (`compress_ratios` incl. the trailing MTP
// entry, `num_hash_layers`, `qk_rope_head_dim`, `rope_scaling`, `quantization_config`,
// `expert_dtype`), the official inference config (`dim`, `n_layers`, `window_size`, ...), and the
// transformers naming (`layer_types`, `mlp_layer_types`, `compress_rates`, `partial_rotary_factor`,
// `rope_parameters`). Values that change the computation but that we do not implement (another
// scoring function, activation, expert group routing, ...) are rejected with the key named.
// Every number is range-checked against what the architecture allows (the bounds table in
// docs/testing.md: e.g. sliding_window ≤ 4096, hc_sinkhorn_iters ≤ 1000, bos/eos in [0, vocab)),
// and a value of the wrong type names the key and the expected type, always as Status::format.
// ModelConfig is a plain value type; nothing here touches weights.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsv4 {

enum class AttnKind : uint8_t { sliding, csa, hca };  // ratio 0, ratio 4 (overlap + indexer), ratio m
const char* attn_kind_name(AttnKind k);                 // "sliding", "csa", "hca"

struct LayerSpec {
  AttnKind attn = AttnKind::sliding;
  int compress_ratio = 0;     // 0 (sliding), 4 (CSA) or m (HCA)
  bool hash_routing = false;  // layer < num_hash_layers: experts chosen by tid2eid[token]
  bool is_mtp = false;
};

struct YarnParams {
  bool enabled = false;
  double factor = 1.0;
  int64_t original_max_position = 0;
  double beta_fast = 32.0, beta_slow = 1.0;
};

struct ModelConfig {
  // ---- sizes (spec §1.1 names in comments) ----
  int vocab_size = 0;            // V
  int hidden_size = 0;           // D
  int num_layers = 0;            // decoder layers, MTP excluded
  int num_heads = 0;             // H
  int head_dim = 0;              // hd (K = V head size)
  int rope_dim = 0;              // rd, tail of each head
  int q_lora_rank = 0;
  int o_groups = 0;
  int o_lora_rank = 0;
  int sliding_window = 0;        // W, current token included
  int index_n_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  int hc_mult = 0;
  int hc_sinkhorn_iters = 0;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  int n_routed_experts = 0;      // E
  int n_shared_experts = 1;
  int experts_per_token = 0;     // K in effect (after any load-time override)
  int config_experts_per_token = 0;  // K as written in config.json
  int moe_intermediate_size = 0; // I
  int num_hash_layers = 0;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  double swiglu_limit = 0.0;     // 0 = no clamp
  int num_mtp_layers = 0;
  bool tie_word_embeddings = false;
  int bos_token_id = 0, eos_token_id = 1;
  int64_t max_position_embeddings = 0;
  // ---- RoPE ----
  double rope_theta = 10000.0;           // sliding layers and MTP
  double compress_rope_theta = 160000.0; // compressed layers (with YaRN when enabled)
  YarnParams yarn;
  // ---- storage formats ----
  int fp8_block_out = 128, fp8_block_in = 128;  // quantization_config.weight_block_size
  std::string expert_dtype = "fp4";             // "fp4" (e2m1, 1×32 e8m0 scales)
  int fp4_block = 32;
  // ---- schedule ----
  std::vector<int> compress_ratios;  // one per decoder layer (MTP excluded)
  int mtp_compress_ratio = 0;
  std::vector<LayerSpec> layers;     // num_layers entries (+ MTP at index num_layers when present)

  // Parses a config.json object; throws Error(format) naming `source` and the key on problems.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // Reads at most 16 MB, JSON nested at most 64 levels (dsv4/json_limits.hpp).
  static ModelConfig from_file(const std::string& path);
  // Writes the upstream root naming (what `make-model` emits).
  nlohmann::json to_json() const;

  // The 4-Expert transformation: K' ≤ K experts per token (tid2eid uses its first K' columns).
  // Throws Error(invalid_argument) when K' is out of range.
  void override_experts_per_token(int k);

  int nope_dim() const { return head_dim - rope_dim; }
  int hc_mix_dim() const { return (2 + hc_mult) * hc_mult; }
  int compressed_ratio_csa() const { return 4; }
  const LayerSpec& mtp_layer() const { return layers.at(static_cast<size_t>(num_layers)); }
  // Inverse frequencies f_i, i = 0..rd/2-1, in f32 exactly as spec §3.5.3 (compressed: YaRN).
  std::vector<float> rope_inv_freq(bool compressed) const;
  // YaRN correction range [low, high] (spec §3.5.3), for diagnostics and tests.
  std::pair<double, double> yarn_correction_range() const;
  // A one-line schedule string like "S S C4 H128 ... | MTP S".
  std::string schedule_string() const;
};

}  // namespace dsv4
