// config.json: bounded JSON parse, then ModelConfig::from_json. Invariants: only dsv4::Error
// escapes; an accepted config has one layer spec per layer (+ MTP), finite RoPE tables, survives
// to_json → from_json unchanged, and its tensor inventory (when small) is well-formed.
#include <cmath>
#include <cstdint>

#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/config.hpp"
#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"
#include "fuzz_util.hpp"

using namespace dsv4;

namespace {
// The real Flash config, and a tiny one derived from it (what `make-model --preset tiny` writes).
const nlohmann::json& base_config(bool tiny) {
  static const nlohmann::json flash = parse_json_file(DSV4_FUZZ_FLASH_CONFIG, 1 << 20)["hf_config_json"];
  static const nlohmann::json small = [] {
    nlohmann::json j = flash;
    j.merge_patch({{"vocab_size", 1024}, {"hidden_size", 256}, {"num_hidden_layers", 6}, {"num_attention_heads", 4},
                   {"head_dim", 128}, {"q_lora_rank", 256}, {"o_groups", 2}, {"o_lora_rank", 128},
                   {"sliding_window", 16}, {"index_n_heads", 4}, {"index_topk", 8}, {"n_routed_experts", 16},
                   {"moe_intermediate_size", 128}, {"compress_ratios", {0, 0, 4, 16, 4, 16, 0}}});
    return j;
  }();
  return tiny ? small : flash;
}
}  // namespace

// Input starting with '{': a whole config.json. Otherwise byte 0 picks a base config (Flash or
// tiny) and the rest is a JSON merge patch (RFC 7386) applied to it, so most inputs are nearly
// valid configs and the fuzzer spends its time on the value checks.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& tally = dsv4_fuzz::tally("config.json");
  const bool whole = size > 0 && data[0] == '{';
  nlohmann::json j;
  try {
    const std::string_view text(reinterpret_cast<const char*>(data) + (whole ? 0 : 1), size - (whole || !size ? 0 : 1));
    j = parse_json_bounded(text, "fuzz config.json");
    if (!whole) {
      nlohmann::json patched = base_config(size > 0 && (data[0] & 1));
      patched.merge_patch(j);
      j = std::move(patched);
    }
  } catch (const Error& e) {
    tally.error(e.status());
    return 0;
  }
  try {
    const ModelConfig c = ModelConfig::from_json(j, "fuzz config.json");
    FUZZ_CHECK(c.layers.size() == static_cast<size_t>(c.num_layers + c.num_mtp_layers));
    for (bool compressed : {false, true})
      for (float f : c.rope_inv_freq(compressed)) FUZZ_CHECK(std::isfinite(f));
    const std::string sched = c.schedule_string();
    const ModelConfig back = ModelConfig::from_json(c.to_json(), "round trip");
    FUZZ_CHECK(back.schedule_string() == sched);
    FUZZ_CHECK(back.to_json() == c.to_json());
    if (static_cast<int64_t>(c.num_layers + 1) * c.n_routed_experts <= 4096) {
      for (const TensorSpec& s : expected_tensors(c))
        for (int64_t d : s.shape) FUZZ_CHECK(d >= 0);
    }
    tally.ok();
  } catch (const Error& e) {
    tally.error(e.status());
  }
  return 0;
}
