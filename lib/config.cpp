// Config parsing, schedule derivation and RoPE tables (contract in include/dsv4/config.hpp).
#include "dsv4/config.hpp"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>

#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"

namespace dsv4 {
using json = nlohmann::json;

const char* attn_kind_name(AttnKind k) {
  switch (k) {
    case AttnKind::sliding: return "sliding";
    case AttnKind::csa: return "csa";
    case AttnKind::hca: return "hca";
  }
  return "?";
}

namespace {
// What a key of type T must hold, for messages.
template <typename T>
constexpr const char* expected_kind() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_integral_v<T> && sizeof(T) <= 4) return "an integer of at most 32 bits";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else return "a finite number";
}

// Reads the first present key among `names`; throws naming all of them when none is present.
class Reader {
 public:
  Reader(const json& j, const std::string& src) : j_(j), src_(src) {}
  const json* find(std::initializer_list<const char*> names) const {
    for (const char* n : names)
      if (j_.contains(n) && !j_[n].is_null()) return &j_[n];
    return nullptr;
  }
  template <typename T>
  T get(std::initializer_list<const char*> names, std::optional<T> fallback = std::nullopt) const {
    const json* v = find(names);
    if (!v) {
      if (fallback) return *fallback;
      fail(Status::format, "{}: missing required key '{}'", src_, *names.begin());
    }
    return as<T>(*v, *names.begin());
  }
  // One value of type T; integers must be integral and fit T (no silent narrowing), numbers
  // finite. A mismatch names the key and the expected type (never a json::type_error).
  template <typename T>
  T as(const json& v, const std::string& key) const {
    bool ok = false;
    if constexpr (std::is_same_v<T, bool>) {
      ok = v.is_boolean();
    } else if constexpr (std::is_same_v<T, std::string>) {
      ok = v.is_string();
    } else if constexpr (std::is_integral_v<T>) {
      if (v.is_number_integer()) {
        // Unsigned values above INT64_MAX, then the range of T.
        ok = !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
        if (ok) {
          const int64_t i = v.get<int64_t>();
          ok = i >= static_cast<int64_t>(std::numeric_limits<T>::min()) && i <= static_cast<int64_t>(std::numeric_limits<T>::max());
          if (ok) return static_cast<T>(i);
        }
      } else if (v.is_number_float()) {
        const double d = v.get<double>();
        ok = std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(std::numeric_limits<T>::min()) &&
             d <= static_cast<double>(std::numeric_limits<T>::max());
        if (ok) return static_cast<T>(d);
      }
    } else {
      ok = v.is_number() && std::isfinite(v.get<double>());
    }
    if (!ok) fail(Status::format, "{}: key '{}' must be {}, got {}", src_, key, expected_kind<T>(), json_brief(v));
    return v.get<T>();
  }
  // An array of T under `key`, every element checked as by as<T>; errors name key[i].
  template <typename T>
  std::vector<T> array(const json& v, const std::string& key) const {
    if (!v.is_array()) fail(Status::format, "{}: '{}' is not an array", src_, key);
    std::vector<T> out;
    for (size_t i = 0; i < v.size(); ++i) out.push_back(as<T>(v[i], fmt::format("{}[{}]", key, i)));
    return out;
  }
  const std::string& src() const { return src_; }

 private:
  const json& j_;
  std::string src_;
};

void require_positive(const std::string& src, const char* key, int64_t v) {
  if (v <= 0) fail(Status::format, "{}: '{}' must be positive, got {}", src, key, v);
}

// Upper bounds of the integer keys (the table in docs/testing.md): generous multiples of the
// largest DeepSeek-V4 model, small enough that nothing sized from them before the checkpoint is
// read (KV windows, top-k buffers, loops) can exhaust memory or time.
struct IntLimit {
  const char* key;
  int64_t max;
};
constexpr IntLimit kIntLimits[] = {
    {"vocab_size", 1 << 20},          {"hidden_size", 65536},        {"num_hidden_layers", 512},
    {"num_attention_heads", 1024},    {"head_dim", 4096},            {"qk_rope_head_dim", 4096},
    {"q_lora_rank", 65536},           {"o_groups", 1024},            {"o_lora_rank", 65536},
    {"sliding_window", 4096},         {"index_n_heads", 1024},       {"index_head_dim", 4096},
    {"index_topk", 16384},            {"hc_mult", 16},               {"hc_sinkhorn_iters", 1000},
    {"n_routed_experts", 4096},       {"num_experts_per_tok", 4096}, {"moe_intermediate_size", 65536},
};
int64_t int_limit(const char* key) {
  for (const auto& l : kIntLimits)
    if (std::string_view(l.key) == key) return l.max;
  return std::numeric_limits<int64_t>::max();
}
void require_at_most(const std::string& src, const char* key, int64_t v, int64_t max) {
  if (v > max)
    fail(Status::format, "{}: '{}' = {} exceeds the limit {} (DeepSeek-V4 bounds: docs/testing.md)", src, key, v, max);
}
// A finite double in (lo, hi] (or [lo, hi] when `closed_low`).
void require_real(const std::string& src, const char* key, double v, double lo, double hi, bool closed_low = false) {
  if (!std::isfinite(v) || (closed_low ? v < lo : v <= lo) || v > hi)
    fail(Status::format, "{}: '{}' = {} is out of range: must be finite and in {}{}, {}]", src, key, v,
         closed_low ? "[" : "(", lo, hi);
}
constexpr int64_t kMaxPositions = int64_t{1} << 24;  // max_position_embeddings, YaRN original length
constexpr int kMaxCompressRatio = 1024;              // HCA ratio (the architecture uses 128)
}  // namespace

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json(parse_json_file(path, kMaxConfigJsonBytes), path);
}

namespace {
ModelConfig parse_config(const json& j, const std::string& src) {
  if (!j.is_object()) fail(Status::format, "{}: not a JSON object", src);
  Reader r(j, src);
  ModelConfig c;
  if (auto* mt = r.find({"model_type"}); mt && mt->is_string() && mt->get<std::string>() != "deepseek_v4")
    fail(Status::unsupported, "{}: model_type '{}' is not supported (expected 'deepseek_v4')", src, mt->get<std::string>());

  c.vocab_size = r.get<int>({"vocab_size"});
  c.hidden_size = r.get<int>({"hidden_size", "dim"});
  c.num_layers = r.get<int>({"num_hidden_layers", "n_layers"});
  require_positive(src, "num_hidden_layers", c.num_layers);
  require_at_most(src, "num_hidden_layers", c.num_layers, int_limit("num_hidden_layers"));
  c.num_heads = r.get<int>({"num_attention_heads", "n_heads"});
  if (int kvh = r.get<int>({"num_key_value_heads"}, 1); kvh != 1)
    fail(Status::unsupported, "{}: num_key_value_heads = {} (DeepSeek-V4 attention has one shared K=V head)", src, kvh);
  c.head_dim = r.get<int>({"head_dim"});
  if (auto* prf = r.find({"partial_rotary_factor"}); prf && !r.find({"qk_rope_head_dim", "rope_head_dim"})) {
    const double f = r.as<double>(*prf, "partial_rotary_factor");
    require_real(src, "partial_rotary_factor", f, 0.0, 1.0);
    require_positive(src, "head_dim", c.head_dim);
    require_at_most(src, "head_dim", c.head_dim, int_limit("head_dim"));
    c.rope_dim = static_cast<int>(std::lround(f * c.head_dim));
  } else
    c.rope_dim = r.get<int>({"qk_rope_head_dim", "rope_head_dim"});
  c.q_lora_rank = r.get<int>({"q_lora_rank"});
  c.o_groups = r.get<int>({"o_groups"});
  c.o_lora_rank = r.get<int>({"o_lora_rank"});
  c.sliding_window = r.get<int>({"sliding_window", "window_size"});
  c.index_n_heads = r.get<int>({"index_n_heads"});
  c.index_head_dim = r.get<int>({"index_head_dim"});
  c.index_topk = r.get<int>({"index_topk"});
  c.hc_mult = r.get<int>({"hc_mult"});
  c.hc_sinkhorn_iters = r.get<int>({"hc_sinkhorn_iters"});
  c.hc_eps = r.get<double>({"hc_eps"}, 1e-6);
  require_real(src, "hc_eps", c.hc_eps, 0.0, 1.0);
  c.rms_norm_eps = r.get<double>({"rms_norm_eps", "norm_eps"}, 1e-6);
  require_real(src, "rms_norm_eps", c.rms_norm_eps, 0.0, 1.0);
  c.n_routed_experts = r.get<int>({"n_routed_experts"});
  c.n_shared_experts = r.get<int>({"n_shared_experts"}, 1);
  c.config_experts_per_token = c.experts_per_token = r.get<int>({"num_experts_per_tok", "n_activated_experts"});
  c.moe_intermediate_size = r.get<int>({"moe_intermediate_size", "moe_inter_dim"});
  c.routed_scaling_factor = r.get<double>({"routed_scaling_factor", "route_scale"}, 1.0);
  require_real(src, "routed_scaling_factor", c.routed_scaling_factor, 0.0, 1000.0);
  c.norm_topk_prob = r.get<bool>({"norm_topk_prob"}, true);
  c.swiglu_limit = r.get<double>({"swiglu_limit"}, 0.0);
  require_real(src, "swiglu_limit", c.swiglu_limit, 0.0, 1e6, /*closed_low=*/true);
  c.num_mtp_layers = r.get<int>({"num_nextn_predict_layers", "n_mtp_layers"}, 0);
  if (c.num_mtp_layers < 0 || c.num_mtp_layers > 1)
    fail(Status::unsupported, "{}: num_nextn_predict_layers {} (0 or 1 supported)", src, c.num_mtp_layers);
  c.tie_word_embeddings = r.get<bool>({"tie_word_embeddings"}, false);
  c.bos_token_id = r.get<int>({"bos_token_id"}, 0);
  c.eos_token_id = r.get<int>({"eos_token_id"}, 1);
  c.max_position_embeddings = r.get<int64_t>({"max_position_embeddings", "max_seq_len"}, int64_t{1} << 20);
  require_positive(src, "max_position_embeddings", c.max_position_embeddings);
  require_at_most(src, "max_position_embeddings", c.max_position_embeddings, kMaxPositions);

  // Semantics we implement exactly; anything else would silently compute a different model.
  if (auto s = r.get<std::string>({"scoring_func", "score_func"}, std::string("sqrtsoftplus")); s != "sqrtsoftplus")
    fail(Status::unsupported, "{}: scoring_func '{}' is not supported (expected 'sqrtsoftplus')", src, s);
  if (auto s = r.get<std::string>({"hidden_act"}, std::string("silu")); s != "silu")
    fail(Status::unsupported, "{}: hidden_act '{}' is not supported (expected 'silu')", src, s);
  if (auto* g = r.find({"n_group"}); g && g->is_number() && r.as<double>(*g, "n_group") > 1)
    fail(Status::unsupported, "{}: n_group = {} (group-limited routing) is not part of DeepSeek-V4", src, json_brief(*g));
  if (c.n_shared_experts != 1)
    fail(Status::unsupported, "{}: n_shared_experts = {} (expected 1)", src, c.n_shared_experts);
  if (c.tie_word_embeddings) fail(Status::unsupported, "{}: tie_word_embeddings = true is not supported", src);
  if (r.get<bool>({"attention_bias"}, false)) fail(Status::unsupported, "{}: attention_bias = true is not supported", src);

  // ---- storage formats ----
  if (auto* q = r.find({"quantization_config"})) {
    if (!q->is_object()) fail(Status::format, "{}: quantization_config is not an object", src);
    if (q->contains("quant_method") && (*q)["quant_method"] != "fp8")
      fail(Status::unsupported, "{}: quantization_config.quant_method {} (expected \"fp8\")", src, (*q)["quant_method"].dump());
    if (q->contains("fmt") && (*q)["fmt"] != "e4m3")
      fail(Status::unsupported, "{}: quantization_config.fmt {} (expected \"e4m3\")", src, (*q)["fmt"].dump());
    if (q->contains("scale_fmt") && (*q)["scale_fmt"] != "ue8m0")
      fail(Status::unsupported, "{}: quantization_config.scale_fmt {} (expected \"ue8m0\")", src, (*q)["scale_fmt"].dump());
    if (q->contains("weight_block_size")) {
      const auto& b = (*q)["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || b[0] != 128 || b[1] != 128)
        fail(Status::unsupported, "{}: quantization_config.weight_block_size {} (expected [128, 128])", src, b.dump());
    }
  }
  if (auto* d = r.find({"dtype"}); d && d->is_string() && d->get<std::string>() != "fp8")
    fail(Status::unsupported, "{}: dtype '{}' (expected 'fp8')", src, d->get<std::string>());
  c.expert_dtype = r.get<std::string>({"expert_dtype"}, std::string("fp4"));
  if (c.expert_dtype != "fp4")
    fail(Status::unsupported, "{}: expert_dtype '{}' is not supported (expected 'fp4'; FP8 experts are Flash-Base)", src, c.expert_dtype);

  // ---- RoPE ----
  c.rope_theta = r.get<double>({"rope_theta"}, 10000.0);
  c.compress_rope_theta = r.get<double>({"compress_rope_theta"}, 160000.0);
  auto object = [&](const json& v, const std::string& where) {
    if (!v.is_object()) fail(Status::format, "{}: '{}' is not an object", src, where);
    return Reader(v, fmt::format("{} ({})", src, where));
  };
  auto read_yarn = [&](const json& y, const char* where) {
    Reader ry = object(y, where);
    std::string type = ry.get<std::string>({"type", "rope_type"}, std::string("default"));
    if (type == "default" || type == "none") return;
    if (type != "yarn") fail(Status::unsupported, "{}: {} type '{}' (expected 'yarn')", src, where, type);
    c.yarn.enabled = true;
    c.yarn.factor = ry.get<double>({"factor"}, 1.0);
    c.yarn.original_max_position = ry.get<int64_t>({"original_max_position_embeddings"});
    c.yarn.beta_fast = ry.get<double>({"beta_fast"}, 32.0);
    c.yarn.beta_slow = ry.get<double>({"beta_slow"}, 1.0);
  };
  if (auto* rp = r.find({"rope_parameters"})) {
    Reader rpr = object(*rp, "rope_parameters");
    if (auto* m = rpr.find({"main"})) c.rope_theta = object(*m, "rope_parameters.main").get<double>({"rope_theta"}, c.rope_theta);
    if (auto* cp = rpr.find({"compress"})) {
      c.compress_rope_theta = object(*cp, "rope_parameters.compress").get<double>({"rope_theta"}, c.compress_rope_theta);
      read_yarn(*cp, "rope_parameters.compress");
    }
  } else if (auto* rs = r.find({"rope_scaling"})) {
    read_yarn(*rs, "rope_scaling");
  } else if (r.find({"rope_factor"})) {  // official inference naming
    c.yarn.enabled = r.get<double>({"rope_factor"}) != 1.0;
    c.yarn.factor = r.get<double>({"rope_factor"});
    c.yarn.original_max_position = r.get<int64_t>({"original_seq_len"});
    c.yarn.beta_fast = r.get<double>({"beta_fast"}, 32.0);
    c.yarn.beta_slow = r.get<double>({"beta_slow"}, 1.0);
  }
  if (!(c.rope_theta > 1) || !(c.compress_rope_theta > 1))
    fail(Status::format, "{}: rope_theta {} / compress_rope_theta {} must be > 1", src, c.rope_theta, c.compress_rope_theta);
  require_real(src, "rope_theta", c.rope_theta, 1.0, 1e12);
  require_real(src, "compress_rope_theta", c.compress_rope_theta, 1.0, 1e12);
  if (c.yarn.enabled) {
    if (!(c.yarn.factor > 0)) fail(Status::format, "{}: YaRN factor {} must be positive", src, c.yarn.factor);
    require_real(src, "YaRN factor", c.yarn.factor, 0.0, 1024.0);
    if (c.yarn.original_max_position <= 0)
      fail(Status::format, "{}: YaRN original_max_position_embeddings {} must be positive", src, c.yarn.original_max_position);
    require_at_most(src, "YaRN original_max_position_embeddings", c.yarn.original_max_position, kMaxPositions);
    if (!(c.yarn.beta_fast > c.yarn.beta_slow) || !(c.yarn.beta_slow > 0))
      fail(Status::format, "{}: YaRN beta_fast {} must exceed beta_slow {} > 0", src, c.yarn.beta_fast, c.yarn.beta_slow);
    require_real(src, "YaRN beta_fast", c.yarn.beta_fast, 0.0, 1e6);
  }

  // ---- per-layer schedule ----
  if (auto* cr = r.find({"compress_ratios"})) {
    std::vector<int> all = r.array<int>(*cr, "compress_ratios");
    if (all.size() != static_cast<size_t>(c.num_layers) && all.size() != static_cast<size_t>(c.num_layers + c.num_mtp_layers))
      fail(Status::format, "{}: compress_ratios has {} entries, expected {} (layers) or {} (layers + MTP)", src, all.size(),
           c.num_layers, c.num_layers + c.num_mtp_layers);
    c.compress_ratios.assign(all.begin(), all.begin() + c.num_layers);
    c.mtp_compress_ratio = all.size() > static_cast<size_t>(c.num_layers) ? all[static_cast<size_t>(c.num_layers)] : 0;
  } else if (auto* lt = r.find({"layer_types"})) {
    if (!lt->is_array() || lt->size() != static_cast<size_t>(c.num_layers))
      fail(Status::format, "{}: layer_types must list {} layer types", src, c.num_layers);
    const json* rates_json = r.find({"compress_rates"});
    const json no_rates = json::object();
    const Reader rates = object(rates_json ? *rates_json : no_rates, "compress_rates");
    auto rate = [&](const char* kind, int dflt) { return rates.get<int>({kind}, dflt); };
    if (rate("compressed_sparse_attention", 4) != 4)
      fail(Status::unsupported, "{}: compress_rates.compressed_sparse_attention = {} (CSA overlap and indexer are tied to ratio 4)",
           src, rate("compressed_sparse_attention", 4));
    for (const std::string& s : r.array<std::string>(*lt, "layer_types")) {
      if (s == "sliding_attention") c.compress_ratios.push_back(0);
      else if (s == "compressed_sparse_attention") c.compress_ratios.push_back(4);
      else if (s == "heavily_compressed_attention") c.compress_ratios.push_back(rate("heavily_compressed_attention", 128));
      else fail(Status::format, "{}: layer_types entry '{}' is unknown", src, s);
    }
  } else {
    fail(Status::format, "{}: missing 'compress_ratios' (or 'layer_types')", src);
  }
  if (auto* mlt = r.find({"mlp_layer_types"}); mlt && !r.find({"num_hash_layers", "n_hash_layers"})) {
    if (!mlt->is_array() || mlt->size() != static_cast<size_t>(c.num_layers))
      fail(Status::format, "{}: mlp_layer_types must list {} entries", src, c.num_layers);
    int n = 0;
    bool seen_moe = false;
    for (const std::string& s : r.array<std::string>(*mlt, "mlp_layer_types")) {
      if (s == "hash_moe") {
        if (seen_moe) fail(Status::unsupported, "{}: mlp_layer_types: hash layers must lead the stack", src);
        ++n;
      } else if (s == "moe") {
        seen_moe = true;
      } else {
        fail(Status::format, "{}: mlp_layer_types entry '{}' is unknown", src, s);
      }
    }
    c.num_hash_layers = n;
  } else {
    c.num_hash_layers = r.get<int>({"num_hash_layers", "n_hash_layers"}, 0);
  }

  // ---- validation of the numbers ----
  for (auto [key, v] : std::initializer_list<std::pair<const char*, int64_t>>{
           {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_layers},
           {"num_attention_heads", c.num_heads}, {"head_dim", c.head_dim}, {"qk_rope_head_dim", c.rope_dim},
           {"q_lora_rank", c.q_lora_rank}, {"o_groups", c.o_groups}, {"o_lora_rank", c.o_lora_rank},
           {"sliding_window", c.sliding_window}, {"index_n_heads", c.index_n_heads},
           {"index_head_dim", c.index_head_dim}, {"index_topk", c.index_topk}, {"hc_mult", c.hc_mult},
           {"hc_sinkhorn_iters", c.hc_sinkhorn_iters}, {"n_routed_experts", c.n_routed_experts},
           {"num_experts_per_tok", c.experts_per_token}, {"moe_intermediate_size", c.moe_intermediate_size}}) {
    require_positive(src, key, v);
    require_at_most(src, key, v, int_limit(key));
  }
  if (c.rope_dim % 2 || c.rope_dim > c.head_dim)
    fail(Status::format, "{}: qk_rope_head_dim {} must be even and ≤ head_dim {}", src, c.rope_dim, c.head_dim);
  if (c.index_head_dim < c.rope_dim)
    fail(Status::format, "{}: index_head_dim {} is smaller than the rope dim {}", src, c.index_head_dim, c.rope_dim);
  if (c.num_heads % c.o_groups)
    fail(Status::format, "{}: num_attention_heads {} is not a multiple of o_groups {}", src, c.num_heads, c.o_groups);
  if (c.experts_per_token > c.n_routed_experts)
    fail(Status::format, "{}: num_experts_per_tok {} exceeds n_routed_experts {}", src, c.experts_per_token, c.n_routed_experts);
  if (c.num_hash_layers < 0 || c.num_hash_layers > c.num_layers)
    fail(Status::format, "{}: num_hash_layers {} out of range [0, {}]", src, c.num_hash_layers, c.num_layers);
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
    fail(Status::format, "{}: bos_token_id {} out of range [0, vocab_size {})", src, c.bos_token_id, c.vocab_size);
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size)
    fail(Status::format, "{}: eos_token_id {} out of range [0, vocab_size {})", src, c.eos_token_id, c.vocab_size);
  // The sliding-window KV of one sequence is allocated from these alone, before any weight is read.
  if (const int64_t kv = int64_t{c.sliding_window} * c.head_dim * (c.num_layers + c.num_mtp_layers); kv > (int64_t{1} << 28))
    fail(Status::format,
         "{}: sliding_window {} × head_dim {} × {} layers = {} KV entries per sequence exceeds the limit 2^28 "
         "(DeepSeek-V4 bounds: docs/testing.md)",
         src, c.sliding_window, c.head_dim, c.num_layers + c.num_mtp_layers, kv);

  auto make_layer = [&](int ratio, bool hash, bool mtp, const std::string& where) {
    LayerSpec l;
    l.compress_ratio = ratio;
    l.hash_routing = hash;
    l.is_mtp = mtp;
    if (ratio == 0) l.attn = AttnKind::sliding;
    else if (ratio == 4) l.attn = AttnKind::csa;  // CSA: overlap + indexer are tied to ratio 4
    else if (ratio > 1 && ratio <= kMaxCompressRatio) l.attn = AttnKind::hca;
    else fail(Status::format, "{}: {} compress ratio {} is invalid (0, 4 or an HCA ratio in [2, {}])", src, where, ratio, kMaxCompressRatio);
    return l;
  };
  for (int i = 0; i < c.num_layers; ++i)
    c.layers.push_back(make_layer(c.compress_ratios[static_cast<size_t>(i)], i < c.num_hash_layers, false, fmt::format("layer {}", i)));
  if (c.num_mtp_layers == 1) {
    if (c.mtp_compress_ratio != 0)
      fail(Status::unsupported, "{}: the MTP layer's compress ratio is {} (only sliding MTP is supported)", src, c.mtp_compress_ratio);
    c.layers.push_back(make_layer(0, false, true, "MTP layer"));
  }
  return c;
}
}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  try {
    return parse_config(j, src);
  } catch (const json::exception& e) {
    // Every access above checks its type first; this only guards against one that does not.
    fail(Status::format, "{}: unexpected JSON content: {}", src, e.what());
  }
}

json ModelConfig::to_json() const {
  std::vector<int> ratios = compress_ratios;
  if (num_mtp_layers) ratios.push_back(mtp_compress_ratio);
  json j = {
      {"architectures", {"DeepseekV4ForCausalLM"}},
      {"model_type", "deepseek_v4"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"hc_eps", hc_eps},
      {"hc_mult", hc_mult},
      {"hc_sinkhorn_iters", hc_sinkhorn_iters},
      {"head_dim", head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", hidden_size},
      {"index_head_dim", index_head_dim},
      {"index_n_heads", index_n_heads},
      {"index_topk", index_topk},
      {"initializer_range", 0.02},
      {"max_position_embeddings", max_position_embeddings},
      {"moe_intermediate_size", moe_intermediate_size},
      {"n_routed_experts", n_routed_experts},
      {"n_shared_experts", n_shared_experts},
      {"norm_topk_prob", norm_topk_prob},
      {"num_attention_heads", num_heads},
      {"num_experts_per_tok", experts_per_token},
      {"num_hidden_layers", num_layers},
      {"num_hash_layers", num_hash_layers},
      {"num_key_value_heads", 1},
      {"num_nextn_predict_layers", num_mtp_layers},
      {"o_groups", o_groups},
      {"o_lora_rank", o_lora_rank},
      {"q_lora_rank", q_lora_rank},
      {"qk_rope_head_dim", rope_dim},
      {"quantization_config",
       {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"quant_method", "fp8"}, {"scale_fmt", "ue8m0"},
        {"weight_block_size", {fp8_block_out, fp8_block_in}}}},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"routed_scaling_factor", routed_scaling_factor},
      {"scoring_func", "sqrtsoftplus"},
      {"sliding_window", sliding_window},
      {"swiglu_limit", swiglu_limit},
      {"tie_word_embeddings", false},
      {"topk_method", "noaux_tc"},
      {"torch_dtype", "bfloat16"},
      {"use_cache", true},
      {"vocab_size", vocab_size},
      {"compress_rope_theta", compress_rope_theta},
      {"compress_ratios", ratios},
      {"expert_dtype", expert_dtype},
  };
  if (yarn.enabled)
    j["rope_scaling"] = {{"beta_fast", yarn.beta_fast}, {"beta_slow", yarn.beta_slow}, {"factor", yarn.factor},
                         {"original_max_position_embeddings", yarn.original_max_position}, {"type", "yarn"}};
  return j;
}

void ModelConfig::override_experts_per_token(int k) {
  if (k <= 0 || k > config_experts_per_token)
    fail(Status::invalid_argument, "experts-per-token override {} out of range: must be 1..{} (the config's num_experts_per_tok)",
         k, config_experts_per_token);
  experts_per_token = k;
}

std::pair<double, double> ModelConfig::yarn_correction_range() const {
  const double two_pi = 2.0 * std::numbers::pi;
  auto corr = [&](double n) {
    return rope_dim * std::log(static_cast<double>(yarn.original_max_position) / (n * two_pi)) /
           (2.0 * std::log(compress_rope_theta));
  };
  double low = std::max(std::floor(corr(yarn.beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(yarn.beta_slow)), static_cast<double>(rope_dim - 1));
  if (low == high) high += 0.001;
  return {low, high};
}

std::vector<float> ModelConfig::rope_inv_freq(bool compressed) const {
  const int half = rope_dim / 2;
  const float base = static_cast<float>(compressed ? compress_rope_theta : rope_theta);
  std::vector<float> f(static_cast<size_t>(half));
  // f32 throughout, as the reference implementations compute it: base^(2i/rd) then its inverse.
  for (int i = 0; i < half; ++i) {
    float expo = static_cast<float>(2 * i) / static_cast<float>(rope_dim);
    f[static_cast<size_t>(i)] = 1.0f / std::pow(base, expo);
  }
  if (!compressed || !yarn.enabled) return f;
  auto [low, high] = yarn_correction_range();
  const float factor = static_cast<float>(yarn.factor);
  for (int i = 0; i < half; ++i) {
    float ramp = static_cast<float>((i - low) / (high - low));
    ramp = std::clamp(ramp, 0.0f, 1.0f);
    float fi = f[static_cast<size_t>(i)];
    f[static_cast<size_t>(i)] = fi / factor * ramp + fi * (1.0f - ramp);
  }
  return f;
}

std::string ModelConfig::schedule_string() const {
  std::string s;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    if (l.is_mtp) s += "| MTP ";
    s += l.attn == AttnKind::sliding ? "S" : l.attn == AttnKind::csa ? "C4" : fmt::format("H{}", l.compress_ratio);
    if (l.hash_routing) s += "#";
    if (i + 1 < layers.size()) s += " ";
  }
  return s;
}

}  // namespace dsv4
