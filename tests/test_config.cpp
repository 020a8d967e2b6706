// Config parsing in all three namings, the derived schedule, RoPE/YaRN tables against the spec's
// reference numbers (tests/data/dsv4-flash-config.json, a copy of the spec's companion file), the
// experts-per-token override, and errors for values we must not silently accept.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "dsv4/config.hpp"
#include "dsv4/error.hpp"

using namespace dsv4;
using json = nlohmann::json;

namespace {
json flash_spec() {
  std::ifstream in(dsv4_test::source_dir() + "/tests/data/dsv4-flash-config.json");
  REQUIRE(in.good());
  return json::parse(in);
}
std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }
}  // namespace

TEST_CASE("the real Flash config parses to the spec's numbers and schedule", "[config]") {
  json spec = flash_spec();
  ModelConfig c = ModelConfig::from_json(spec["hf_config_json"]);
  CHECK(c.vocab_size == 129280);
  CHECK(c.hidden_size == 4096);
  CHECK(c.num_layers == 43);
  CHECK(c.num_mtp_layers == 1);
  CHECK(c.layers.size() == 44);
  CHECK(c.experts_per_token == 6);
  CHECK(c.hc_mix_dim() == 24);
  CHECK(c.nope_dim() == 448);
  const json& d = spec["derived"];
  for (int l : d["sliding_layers"]) CHECK(c.layers[static_cast<size_t>(l)].attn == AttnKind::sliding);
  for (int l : d["csa_ratio4_layers"]) CHECK(c.layers[static_cast<size_t>(l)].attn == AttnKind::csa);
  for (int l : d["hca_ratio128_layers"]) {
    CHECK(c.layers[static_cast<size_t>(l)].attn == AttnKind::hca);
    CHECK(c.layers[static_cast<size_t>(l)].compress_ratio == 128);
  }
  int hash = 0;
  for (const auto& l : c.layers) hash += l.hash_routing;
  CHECK(hash == 3);
  for (int l : d["hash_routed_layers"]) CHECK(c.layers[static_cast<size_t>(l)].hash_routing);
  CHECK(c.mtp_layer().is_mtp);
  CHECK(c.mtp_layer().attn == AttnKind::sliding);
  CHECK_FALSE(c.mtp_layer().hash_routing);

  auto [low, high] = c.yarn_correction_range();
  CHECK(low == d["yarn_correction_range_compress_rope"][0].get<double>());
  CHECK(high == d["yarn_correction_range_compress_rope"][1].get<double>());
  // The spec prints the f32 tables with 9 significant digits; libm pow implementations differ by
  // an ulp, so agree within 2 f32 ulps (2.4e-7 relative). A wrong YaRN ramp or base is off by >1e-2.
  auto check_table = [](const std::vector<float>& got, const json& want) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("i = " << i);
      CHECK(std::fabs(got[i] - want[i].get<double>()) <= 2.4e-7 * want[i].get<double>());
    }
  };
  check_table(c.rope_inv_freq(false), d["rope_inv_freq_main_theta10000_no_yarn"]);
  check_table(c.rope_inv_freq(true), d["rope_inv_freq_compress_theta160000_yarn16"]);
}

TEST_CASE("the official inference naming gives the same config", "[config]") {
  json spec = flash_spec();
  ModelConfig a = ModelConfig::from_json(spec["hf_config_json"]);
  json inf = spec["inference_config_json"];
  inf["n_mtp_layers"] = 1;
  ModelConfig b = ModelConfig::from_json(inf, "inference/config.json");
  CHECK(a.to_json() == b.to_json());
}

TEST_CASE("the transformers naming (layer_types, rope_parameters, ...) gives the same config", "[config]") {
  json spec = flash_spec();
  ModelConfig a = ModelConfig::from_json(spec["hf_config_json"]);
  json hf = spec["hf_config_json"];
  json layer_types = json::array(), mlp = json::array();
  for (int i = 0; i < 43; ++i) {
    int r = hf["compress_ratios"][static_cast<size_t>(i)];
    layer_types.push_back(r == 0 ? "sliding_attention" : r == 4 ? "compressed_sparse_attention" : "heavily_compressed_attention");
    mlp.push_back(i < 3 ? "hash_moe" : "moe");
  }
  for (const char* k : {"compress_ratios", "num_hash_layers", "qk_rope_head_dim", "rope_scaling", "rope_theta", "compress_rope_theta"})
    hf.erase(k);
  hf["layer_types"] = layer_types;
  hf["mlp_layer_types"] = mlp;
  hf["compress_rates"] = {{"compressed_sparse_attention", 4}, {"heavily_compressed_attention", 128}};
  hf["partial_rotary_factor"] = 0.125;
  hf["rope_parameters"] = {{"main", {{"rope_type", "default"}, {"rope_theta", 10000}}},
                           {"compress", {{"rope_type", "yarn"}, {"rope_theta", 160000}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                                         {"beta_fast", 32}, {"beta_slow", 1}}}};
  ModelConfig b = ModelConfig::from_json(hf);
  json ja = a.to_json(), jb = b.to_json();
  ja.erase("compress_ratios");  // the HF naming drops the MTP entry; compare the per-layer schedule
  jb.erase("compress_ratios");
  CHECK(ja == jb);
  CHECK(a.compress_ratios == b.compress_ratios);
  CHECK(a.rope_inv_freq(true) == b.rope_inv_freq(true));
}

TEST_CASE("fixture configs parse (upstream naming with a small HCA ratio)", "[config]") {
  const std::string dir = dsv4_test::shared_dir() + "/fixtures/tiny-a/model/config.json";
  if (!std::ifstream(dir)) {
    WARN("SKIP: ../shared fixtures not present");
    return;
  }
  ModelConfig c = ModelConfig::from_file(dir);
  CHECK(c.schedule_string() == "S# S# C4# H16 C4 H16 | MTP S");
  CHECK(c.index_topk == 8);
}

TEST_CASE("experts-per-token override (the 4-Expert transformation)", "[config]") {
  ModelConfig c = ModelConfig::from_json(flash_spec()["hf_config_json"]);
  c.override_experts_per_token(4);
  CHECK(c.experts_per_token == 4);
  CHECK(c.config_experts_per_token == 6);
  CHECK_THROWS_AS(c.override_experts_per_token(7), Error);
  CHECK_THROWS_AS(c.override_experts_per_token(0), Error);
  json v = flash_spec()["hf_config_json"];
  v["num_experts_per_tok"] = 4;  // cloudyu/DeepSeek-V4-Flash-4Expert ships this config
  CHECK(ModelConfig::from_json(v).experts_per_token == 4);
}

TEST_CASE("config values that would change the model are rejected by name", "[config][errors]") {
  json base = flash_spec()["hf_config_json"];
  auto with = [&](const char* k, json v) {
    json j = base;
    j[k] = std::move(v);
    return error_of(j);
  };
  CHECK(contains(with("scoring_func", "softmax"), "scoring_func 'softmax'"));
  CHECK(contains(with("hidden_act", "gelu"), "hidden_act"));
  CHECK(contains(with("n_group", 8), "n_group"));
  CHECK(contains(with("num_key_value_heads", 8), "num_key_value_heads"));
  CHECK(contains(with("expert_dtype", "fp8"), "expert_dtype 'fp8'"));
  CHECK(contains(with("model_type", "llama"), "model_type 'llama'"));
  CHECK(contains(with("compress_ratios", json::array({0, 4})), "compress_ratios has 2 entries"));
  CHECK(contains(with("num_experts_per_tok", 300), "exceeds n_routed_experts"));
  CHECK(contains(with("hidden_size", "big"), "'hidden_size'"));
  CHECK(contains(with("quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {64, 64}}}), "weight_block_size"));
  // Structure and types: named keys, no silent narrowing, no reads past arrays.
  CHECK(contains(with("compress_ratios", json::array({0, "4"})), "compress_ratios[1]"));
  CHECK(contains(with("vocab_size", 4294968320.0), "'vocab_size'"));
  CHECK(contains(with("num_hidden_layers", -1), "num_hidden_layers' must be positive"));
  CHECK(contains(with("num_nextn_predict_layers", -5), "num_nextn_predict_layers -5"));
  CHECK(contains(with("rope_scaling", json::array({1, 2})), "'rope_scaling' is not an object"));
  CHECK(contains(with("rope_scaling", {{"type", "yarn"}, {"factor", 0}, {"original_max_position_embeddings", 65536}}), "YaRN factor 0"));
  CHECK(contains(with("rope_scaling", {{"type", "yarn"}, {"factor", "16"}, {"original_max_position_embeddings", 65536}}), "'factor'"));
  CHECK(contains(with("rope_scaling", {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                                        {"beta_fast", 1}, {"beta_slow", 32}}),
                 "beta_fast"));
  CHECK(contains(with("rope_theta", 0), "rope_theta 0"));
  {
    json hf = base;
    hf.erase("compress_ratios");
    hf["layer_types"] = json::array();
    for (int i = 0; i < 43; ++i) hf["layer_types"].push_back(i == 5 ? json(7) : json("sliding_attention"));
    CHECK(contains(error_of(hf), "layer_types[5]"));
    hf["layer_types"][5] = "compressed_sparse_attention";
    hf["compress_rates"] = {{"compressed_sparse_attention", 8}};
    CHECK(contains(error_of(hf), "compress_rates.compressed_sparse_attention = 8"));
  }
  json j = base;
  j.erase("vocab_size");
  CHECK(contains(error_of(j), "missing required key 'vocab_size'"));
  CHECK(contains(error_of(json::array()), "not a JSON object"));
}
