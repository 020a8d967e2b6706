// Random checkpoint generator (contract in include/dsv4/model_gen.hpp).
#include "dsv4/model_gen.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/dtypes.hpp"
#include "dsv4/error.hpp"
#include "dsv4/quant.hpp"
#include "dsv4/rng.hpp"

namespace dsv4 {
namespace fs = std::filesystem;

ModelConfig preset_config(const std::string& preset) {
  nlohmann::json j;
  if (preset == "flash") {
    std::vector<int> ratios = {0, 0};
    for (int l = 2; l < 43; ++l) ratios.push_back(l % 2 == 0 ? 4 : 128);
    ratios.push_back(0);  // MTP
    j = {{"vocab_size", 129280}, {"hidden_size", 4096}, {"num_hidden_layers", 43}, {"num_attention_heads", 64},
         {"head_dim", 512}, {"qk_rope_head_dim", 64}, {"q_lora_rank", 1024}, {"o_groups", 8}, {"o_lora_rank", 1024},
         {"sliding_window", 128}, {"index_n_heads", 64}, {"index_head_dim", 128}, {"index_topk", 512},
         {"hc_mult", 4}, {"hc_sinkhorn_iters", 20}, {"n_routed_experts", 256}, {"num_experts_per_tok", 6},
         {"moe_intermediate_size", 2048}, {"num_hash_layers", 3}, {"routed_scaling_factor", 1.5},
         {"swiglu_limit", 10.0}, {"num_nextn_predict_layers", 1}, {"max_position_embeddings", 1048576},
         {"rope_theta", 10000}, {"compress_rope_theta", 160000}, {"compress_ratios", ratios},
         {"rope_scaling", {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                           {"beta_fast", 32}, {"beta_slow", 1}}}};
  } else if (preset == "tiny") {
    // Every path at small size: sliding, CSA (ratio 4 + indexer), HCA (ratio 16 fires on short
    // prompts), 3 hash layers, window 16, indexer top-8, top-6 of 16 experts (so a 4-expert override
    // is meaningful); dims multiples of 128 / 64 / 32 as the FP8/FP4 formats require.
    j = {{"vocab_size", 129280}, {"hidden_size", 256}, {"num_hidden_layers", 6}, {"num_attention_heads", 4},
         {"head_dim", 128}, {"qk_rope_head_dim", 64}, {"q_lora_rank", 256}, {"o_groups", 2}, {"o_lora_rank", 128},
         {"sliding_window", 16}, {"index_n_heads", 4}, {"index_head_dim", 128}, {"index_topk", 8},
         {"hc_mult", 4}, {"hc_sinkhorn_iters", 20}, {"n_routed_experts", 16}, {"num_experts_per_tok", 6},
         {"moe_intermediate_size", 128}, {"num_hash_layers", 3}, {"routed_scaling_factor", 1.5},
         {"swiglu_limit", 10.0}, {"num_nextn_predict_layers", 1}, {"max_position_embeddings", 1048576},
         {"rope_theta", 10000}, {"compress_rope_theta", 160000}, {"compress_ratios", {0, 0, 4, 16, 4, 16, 0}},
         {"rope_scaling", {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                           {"beta_fast", 32}, {"beta_slow", 1}}}};
  } else {
    fail(Status::invalid_argument, "unknown preset '{}' (expected tiny or flash)", preset);
  }
  j["quantization_config"] = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"quant_method", "fp8"},
                              {"scale_fmt", "ue8m0"}, {"weight_block_size", {128, 128}}};
  j["expert_dtype"] = "fp4";
  j["scoring_func"] = "sqrtsoftplus";
  j["model_type"] = "deepseek_v4";
  return ModelConfig::from_json(j, "preset " + preset);
}

void apply_overrides(ModelConfig& c, int layers, int experts, int experts_per_token) {
  nlohmann::json j = c.to_json();
  if (layers > 0) {
    std::vector<int> r = c.compress_ratios;
    if (layers > static_cast<int>(r.size()))
      fail(Status::invalid_argument, "--layers {} exceeds the preset's {} layers", layers, r.size());
    r.resize(static_cast<size_t>(layers));
    if (c.num_mtp_layers) r.push_back(c.mtp_compress_ratio);
    j["num_hidden_layers"] = layers;
    j["compress_ratios"] = r;
    j["num_hash_layers"] = std::min(c.num_hash_layers, layers);
  }
  if (experts > 0) {
    j["n_routed_experts"] = experts;
    if (j["num_experts_per_tok"].get<int>() > experts) j["num_experts_per_tok"] = experts;
  }
  if (experts_per_token > 0) j["num_experts_per_tok"] = experts_per_token;
  c = ModelConfig::from_json(j, "make-model options");
}

namespace {
// One splitmix64 stream per tensor.
struct Rng {
  uint64_t s;
  uint64_t next() { return splitmix64(s); }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  float symmetric() { return 2.0f * uniform() - 1.0f; }                                 // [-1, 1)
};
uint64_t name_hash(uint64_t seed, const std::string& s) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}
template <typename T>
void put(std::vector<uint8_t>& b, const std::vector<T>& v) {
  b.resize(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
}
void put_bf16(std::vector<uint8_t>& b, int64_t n, Rng& r, float scale, float offset = 0) {
  b.resize(static_cast<size_t>(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v = f32_to_bf16(offset + scale * r.symmetric());
    std::memcpy(b.data() + 2 * i, &v, 2);
  }
}
void put_f32(std::vector<uint8_t>& b, int64_t n, Rng& r, float scale, float offset = 0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = offset + scale * r.symmetric();
  put(b, v);
}
constexpr float kSqrt3 = 1.7320508f;  // uniform[-√3, √3] has unit variance
}  // namespace

void generate_tensor(const ModelConfig& cfg, const TensorSpec& s, uint64_t seed, std::vector<uint8_t>& b,
                     std::vector<uint8_t>& pending_scale) {
  Rng r{name_hash(seed, s.name)};
  int64_t n = 1;  // elements as stored (packed FP4 pairs count as one I8)
  for (int64_t d : s.shape) n *= d;
  const float w_std = s.fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(s.fan_in)) : 1.0f;
  switch (s.role) {
    case TensorRole::embedding: put_bf16(b, n, r, kSqrt3); break;
    case TensorRole::linear_bf16: put_bf16(b, n, r, kSqrt3 * w_std); break;
    case TensorRole::norm: put_bf16(b, n, r, 0.1f, 1.0f); break;
    case TensorRole::hc_fn: put_f32(b, n, r, kSqrt3 * w_std); break;
    case TensorRole::hc_base: put_f32(b, n, r, 0.5f); break;
    case TensorRole::hc_scale: put_f32(b, n, r, 0.5f, 1.0f); break;
    case TensorRole::sink: put_f32(b, n, r, 2.0f, 1.0f); break;   // large sinks cover the sink path
    case TensorRole::ape: put_f32(b, n, r, 0.5f); break;
    case TensorRole::router_bias: put_f32(b, n, r, 0.5f); break;  // non-zero: selection ≠ unbiased top-K
    case TensorRole::tid2eid: {
      const int64_t rows = s.shape[0], cols = s.shape[1];
      std::vector<int64_t> ids(static_cast<size_t>(rows * cols));
      std::vector<int64_t> perm(static_cast<size_t>(cfg.n_routed_experts));
      for (int64_t row = 0; row < rows; ++row) {  // distinct ids per row: partial Fisher–Yates
        for (size_t e = 0; e < perm.size(); ++e) perm[e] = static_cast<int64_t>(e);
        for (int64_t k = 0; k < cols; ++k) {
          size_t j = static_cast<size_t>(k) + r.next() % (perm.size() - static_cast<size_t>(k));
          std::swap(perm[static_cast<size_t>(k)], perm[j]);
          ids[static_cast<size_t>(row * cols + k)] = perm[static_cast<size_t>(k)];
        }
      }
      put(b, ids);
      break;
    }
    case TensorRole::fp8_weight: {
      std::vector<float> w(static_cast<size_t>(n));
      for (auto& x : w) x = kSqrt3 * w_std * r.symmetric();
      Fp8Quantized q = quantize_fp8_block(w.data(), s.shape[0], s.shape[1], cfg.fp8_block_out, cfg.fp8_block_in);
      b = std::move(q.codes);
      pending_scale = std::move(q.scales);
      break;
    }
    case TensorRole::fp4_weight: {
      // Uniform random codes (rms 2.93) with per-32 scales near 1/(2.93·√fan_in), jittered by one
      // binade so the scales really vary; fast enough for Flash-width experts.
      b.resize(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; k += 8) {
        uint64_t v = r.next();
        for (int64_t j = 0; j < 8 && k + j < n; ++j) b[static_cast<size_t>(k + j)] = static_cast<uint8_t>(v >> (8 * j));
      }
      const int base = 127 + static_cast<int>(std::lround(std::log2(w_std / 2.93f)));
      const int64_t in = s.shape[1] * 2, sc = (in + cfg.fp4_block - 1) / cfg.fp4_block;
      pending_scale.resize(static_cast<size_t>(s.shape[0] * sc));
      for (auto& e : pending_scale) e = static_cast<uint8_t>(base + static_cast<int>(r.next() % 3) - 1);
      break;
    }
    case TensorRole::fp8_scale:
    case TensorRole::fp4_scale:
      fail(Status::internal, "make-model: scale '{}' comes with its weight", s.name);
  }
}

size_t generate_model(const ModelConfig& cfg, const GenerateOptions& opt, const Logger& log) {
  if (opt.out_dir.empty()) fail(Status::invalid_argument, "make-model: --out is required");
  fs::create_directories(opt.out_dir);
  const std::vector<TensorSpec> specs = expected_tensors(cfg);
  std::vector<TensorHeader> headers;
  size_t total = 0;
  for (const auto& s : specs) {
    headers.push_back({s.name, s.dtype, s.shape});
    total += headers.back().nbytes();
  }
  log.info("make-model: {} tensors, {:.2f} GB, schedule {}", specs.size(), total / 1e9, cfg.schedule_string());

  std::vector<uint8_t> pending_scale;  // scale of the fp8/fp4 weight just written (emitted next)
  size_t done = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  auto fill = [&](size_t i, std::vector<uint8_t>& b) {
    const TensorSpec& s = specs[i];
    if (s.role == TensorRole::fp8_scale || s.role == TensorRole::fp4_scale) {
      if (pending_scale.size() != headers[i].nbytes())
        fail(Status::internal, "make-model: scale '{}' does not follow its weight", s.name);
      b = std::move(pending_scale);
      pending_scale.clear();
    } else {
      generate_tensor(cfg, s, opt.seed, b, pending_scale);
    }
    done += b.size();
    auto now = std::chrono::steady_clock::now();
    if (now - last > std::chrono::seconds(2)) {
      last = now;
      double secs = std::chrono::duration<double>(now - t0).count();
      log.info("make-model: {:5.1f}% ({:.2f} / {:.2f} GB, {:.0f} MB/s)", 100.0 * done / total, done / 1e9, total / 1e9,
               done / 1e6 / secs);
    }
  };
  int shards = write_safetensors_sharded(opt.out_dir, headers, opt.max_shard_bytes, fill, {{"format", "pt"}});

  std::ofstream(fs::path(opt.out_dir) / "config.json") << cfg.to_json().dump(2) << "\n";
  nlohmann::json gen = {{"bos_token_id", cfg.bos_token_id}, {"eos_token_id", cfg.eos_token_id}, {"do_sample", true},
                        {"temperature", 1.0}, {"top_p", 1.0}};
  std::ofstream(fs::path(opt.out_dir) / "generation_config.json") << gen.dump(2) << "\n";
  auto copy_in = [&](const std::string& src, const char* name) {
    if (src.empty()) return;
    if (!fs::exists(src)) fail(Status::io, "make-model: tokenizer file {} not found", src);
    fs::copy_file(src, fs::path(opt.out_dir) / name, fs::copy_options::overwrite_existing);
  };
  copy_in(opt.tokenizer_json, "tokenizer.json");
  copy_in(opt.tokenizer_config, "tokenizer_config.json");
  log.info("make-model: wrote {} shard(s), {:.2f} GB to {}", shards, total / 1e9, opt.out_dir);
  return total;
}

}  // namespace dsv4
