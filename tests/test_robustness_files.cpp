// Hostile-input regressions for the model files (issue 15): safetensors headers and metadata nested
// deeply, index entries that point outside the folder, config.json numbers without bounds or of
// the wrong type, and the bounded JSON helpers every file reader uses.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "catch.hpp"
#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/config.hpp"
#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"
#include "dsv4/model_gen.hpp"
#include "dsv4/safetensors.hpp"

using namespace dsv4;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Outcome {
  Status status = Status::ok;
  std::string message;
};
template <typename F>
Outcome outcome_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  return {};
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dsv4-robust-files-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}
// 8-byte length + header + `data_bytes` zero bytes.
void write_safetensors(const fs::path& p, const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  s += header;
  s.append(data_bytes, '\0');
  write_file(p, s);
}
std::string nest(const std::string& open, const std::string& middle, const std::string& close, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += open;
  s += middle;
  for (size_t i = 0; i < n; ++i) s += close;
  return s;
}

json flash() {
  std::ifstream in(dsv4_test::source_dir() + "/tests/data/dsv4-flash-config.json");
  REQUIRE(in.good());
  return json::parse(in)["hf_config_json"];
}
Outcome config_outcome(const json& j) {
  return outcome_of([&] { ModelConfig::from_json(j, "robust-config.json"); });
}

}  // namespace

TEST_CASE("robustness: JSON nesting is checked before parsing, with the limit at 64 levels", "[robustness][json]") {
  CHECK(json_nesting_depth("1") == 0);
  CHECK(json_nesting_depth(R"({"a":[1,{"b":[]}]})") == 4);
  CHECK(json_nesting_depth(R"(["[[[[", "\"{{{{"])") == 1);  // brackets inside strings do not count
  CHECK(json_nesting_depth(nest("[", "", "]", 1000000), 64) == 65);  // stops early
  CHECK(parse_json_bounded(nest("[", "1", "]", 64), "x").is_array());
  const Outcome o = outcome_of([] { parse_json_bounded(nest("[", "1", "]", 65), "f.json"); });
  CHECK(o.status == Status::format);
  CHECK(has(o.message, "f.json: JSON nested deeper than 64 levels"));
  CHECK(outcome_of([] { parse_json_bounded("{\"a\":", "g.json"); }).status == Status::format);
  // json_brief never recurses and cuts long strings.
  CHECK(json_brief(json::parse(nest("[", "1", "]", 10))) == "an array of 1");
  CHECK(json_brief(json(std::string(1000, 'x'))).size() < 100);
  TempDir d("budget");
  write_file(d.path / "big.json", std::string(2000, ' ') + "1");
  const Outcome b = outcome_of([&] { parse_json_file((d.path / "big.json").string(), 1000); });
  CHECK(b.status == Status::format);
  CHECK(has(b.message, "exceeds the 1000-byte limit"));
  CHECK(outcome_of([&] { parse_json_file((d.path / "absent.json").string(), 1000); }).status == Status::io);
}

TEST_CASE("robustness: a safetensors __metadata__ value nested 100,000 deep is a format error", "[robustness][safetensors]") {
  TempDir d("meta");
  const std::string header =
      R"({"__metadata__":{"deep":)" + nest("[", "0", "]", 100000) + R"(},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  write_safetensors(d.path / "deep.safetensors", header, 8);
  const Outcome o = outcome_of([&] { SafetensorsFile f((d.path / "deep.safetensors").string()); });
  CHECK(o.status == Status::format);
  CHECK(has(o.message, "deep.safetensors"));
  CHECK(has(o.message, "nested deeper than 64"));
  // Through the checkpoint (what `dsv4 generate` and Python Model open).
  fs::rename(d.path / "deep.safetensors", d.path / "model.safetensors");
  CHECK(outcome_of([&] { Checkpoint c(d.path.string()); }).status == Status::format);
  // Shallow non-string metadata is still kept, as its JSON text.
  write_safetensors(d.path / "ok.safetensors",
                    R"({"__metadata__":{"n":[1,[2]],"s":"x"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  SafetensorsFile ok((d.path / "ok.safetensors").string());
  CHECK(ok.metadata().at("n") == "[1,[2]]");
  CHECK(ok.metadata().at("s") == "x");
}

TEST_CASE("robustness: index entries must be plain file names inside the checkpoint folder", "[robustness][safetensors]") {
  TempDir d("index");
  const fs::path ck = d.path / "ckpt";
  fs::create_directories(ck / "sub");
  SafetensorsWriter w;
  w.add_values<float>("a", DType::F32, {2}, {1.0f, 2.0f});
  w.write((ck / "model-00001-of-00001.safetensors").string());
  w.write((ck / "sub" / "nested.safetensors").string());
  w.write((d.path / "outside.safetensors").string());
  auto with_entry = [&](const std::string& file) {
    write_file(ck / "model.safetensors.index.json", json{{"weight_map", {{"a", file}}}}.dump());
    return outcome_of([&] { Checkpoint c(ck.string()); });
  };
  CHECK(with_entry("model-00001-of-00001.safetensors").status == Status::ok);
  // /etc/passwd used to be opened (and reported as a malformed shard); ../ and sub/ likewise.
  for (const std::string& bad : std::vector<std::string>{"/etc/passwd", "../outside.safetensors", (d.path / "outside.safetensors").string(),
                                "sub/nested.safetensors", "./model-00001-of-00001.safetensors", "..", ".", "",
                                "sub\\nested.safetensors", std::string("model\0x", 7)}) {
    INFO(bad);
    const Outcome o = with_entry(bad);
    CHECK(o.status == Status::format);
    CHECK(has(o.message, "plain file name"));
    CHECK(has(o.message, "weight_map['a']"));
  }
  // Found by fuzz_safetensors: a name longer than NAME_MAX made std::filesystem throw its own
  // filesystem_error ("File name too long") past the caller; it is Status::io now, as is a folder
  // path longer than PATH_MAX.
  const Outcome longname = with_entry(std::string(300, 'w') + ".safetensors");
  CHECK(longname.status == Status::io);
  CHECK(has(longname.message, "cannot access"));
  CHECK(outcome_of([] { Checkpoint c("/tmp/" + std::string(5000, 'd')); }).status == Status::io);
  CHECK(outcome_of([] { Checkpoint c(std::string(300, 'd') + "/model"); }).status == Status::io);

  // Shards that are symlinks (a Hugging Face cache: snapshots/<rev>/x → ../../blobs/<hash>) load:
  // only the name in the index is checked, not where it resolves.
  const fs::path blobs = d.path / "blobs", snap = d.path / "snapshots" / "rev";
  fs::create_directories(blobs);
  fs::create_directories(snap);
  w.write((blobs / "0123abcd").string());
  fs::create_symlink("../../blobs/0123abcd", snap / "model-00001-of-00001.safetensors");
  write_file(blobs / "idx", json{{"weight_map", {{"a", "model-00001-of-00001.safetensors"}}}}.dump());
  fs::create_symlink("../../blobs/idx", snap / "model.safetensors.index.json");
  Checkpoint c(snap.string());
  CHECK(c.get("a").as<float>()[1] == 2.0f);
}

TEST_CASE("robustness: every config number is range-checked against the architecture", "[robustness][config]") {
  const json base = flash();
  REQUIRE(config_outcome(base).status == Status::ok);
  auto with = [&](const std::string& key, json v) {
    json j = base;
    j[key] = std::move(v);
    return config_outcome(j);
  };
  SECTION("the campaign's values") {
    // 2^31 − 1 Sinkhorn iterations ran for ever; a window of 10^6 allocated 1.75 GB up front.
    Outcome o = with("hc_sinkhorn_iters", 2147483647);
    CHECK(o.status == Status::format);
    CHECK(has(o.message, "'hc_sinkhorn_iters' = 2147483647 exceeds the limit 1000"));
    o = with("sliding_window", 1000000);
    CHECK(has(o.message, "'sliding_window' = 1000000 exceeds the limit 4096"));
    CHECK(with("sliding_window", 4096).status == Status::ok);
    CHECK(has(with("hc_eps", -1e-6).message, "'hc_eps' = -1e-06 is out of range"));
    CHECK(with("hc_eps", 0.0).status == Status::format);
    CHECK(has(with("bos_token_id", 129280).message, "bos_token_id 129280 out of range [0, vocab_size 129280)"));
    CHECK(has(with("eos_token_id", -1).message, "eos_token_id -1 out of range"));
    CHECK(with("eos_token_id", 129279).status == Status::ok);
  }
  SECTION("each integer key: its limit is accepted or fails on another rule, limit + 1 is rejected by name") {
    const std::pair<const char*, int64_t> limits[] = {
        {"vocab_size", 1 << 20},       {"hidden_size", 65536},        {"num_hidden_layers", 512},
        {"num_attention_heads", 1024}, {"head_dim", 4096},            {"q_lora_rank", 65536},
        {"o_lora_rank", 65536},        {"sliding_window", 4096},      {"index_n_heads", 1024},
        {"index_head_dim", 4096},      {"index_topk", 16384},         {"hc_mult", 16},
        {"hc_sinkhorn_iters", 1000},   {"n_routed_experts", 4096},    {"moe_intermediate_size", 65536},
        {"o_groups", 1024},            {"num_experts_per_tok", 4096}, {"max_position_embeddings", int64_t{1} << 24}};
    for (const auto& [key, max] : limits) {
      INFO(key);
      const Outcome at = with(key, max);
      CHECK(!has(at.message, "exceeds the limit"));
      const Outcome above = with(key, max + 1);
      CHECK(above.status == Status::format);
      CHECK(has(above.message, std::string("'") + key + "'"));
      CHECK(has(above.message, "exceeds the limit"));
      CHECK(with(key, -1).status == Status::format);
    }
    CHECK(with("num_hidden_layers", 2147483647).status == Status::format);
  }
  SECTION("real-valued keys must be finite and in range") {
    for (const char* key : {"hc_eps", "rms_norm_eps", "routed_scaling_factor", "rope_theta", "compress_rope_theta"}) {
      INFO(key);
      CHECK(with(key, 1e300).status == Status::format);
      CHECK(with(key, -5.0).status == Status::format);
    }
    CHECK(with("swiglu_limit", -1.0).status == Status::format);
    CHECK(with("swiglu_limit", 0.0).status == Status::ok);
    json y = base;
    y["rope_scaling"]["factor"] = 1e6;
    CHECK(has(config_outcome(y).message, "YaRN factor"));
    y = base;
    y["rope_scaling"]["original_max_position_embeddings"] = int64_t{1} << 40;
    CHECK(has(config_outcome(y).message, "original_max_position_embeddings"));
  }
  SECTION("compress ratios and the sliding KV product") {
    json j = base;
    j["compress_ratios"][3] = 4096;
    CHECK(has(config_outcome(j).message, "compress ratio 4096 is invalid"));
    j["compress_ratios"][3] = 1024;
    CHECK(config_outcome(j).status == Status::ok);
    j = base;
    j["head_dim"] = 4096;
    j["sliding_window"] = 4096;
    CHECK(has(config_outcome(j).message, "KV entries per sequence exceeds the limit"));
  }
}

TEST_CASE("robustness: config type errors name the key and the expected type", "[robustness][config]") {
  const json base = flash();
  auto with = [&](const std::string& key, json v) {
    json j = base;
    j[key] = std::move(v);
    return config_outcome(j);
  };
  // A string partial_rotary_factor was "internal error: json type_error".
  json t = base;
  t.erase("qk_rope_head_dim");
  t["partial_rotary_factor"] = "0.125";
  Outcome o = config_outcome(t);
  CHECK(o.status == Status::format);
  CHECK(has(o.message, "key 'partial_rotary_factor' must be a finite number, got \"0.125\""));
  t["partial_rotary_factor"] = 0.125;
  CHECK(config_outcome(t).status == Status::ok);
  t["partial_rotary_factor"] = 2.0;
  CHECK(has(config_outcome(t).message, "partial_rotary_factor"));
  CHECK(has(with("hidden_size", true).message, "key 'hidden_size' must be an integer of at most 32 bits, got true"));
  CHECK(has(with("sliding_window", 128.5).message, "key 'sliding_window' must be an integer"));
  CHECK(has(with("rms_norm_eps", "1e-6").message, "key 'rms_norm_eps' must be a finite number"));
  CHECK(has(with("norm_topk_prob", 1).message, "key 'norm_topk_prob' must be true or false, got 1"));
  CHECK(has(with("scoring_func", json::array({"x"})).message, "key 'scoring_func' must be a string, got an array of 1"));
  CHECK(has(with("max_position_embeddings", "big").message, "key 'max_position_embeddings' must be an integer"));
  CHECK(has(with("n_group", 1e300).message, "n_group"));
  json r = base;
  r["rope_scaling"]["beta_fast"] = json::object();
  CHECK(has(config_outcome(r).message, "key 'beta_fast' must be a finite number, got an object of 0"));
  // No json exception of any kind reaches the caller, whatever the value.
  for (const auto& [key, v] : base.items()) {
    for (const json& bad : {json("s"), json(true), json::array(), json::object(), json(1e308), json(-1), json(nullptr)}) {
      json j = base;
      j[key] = bad;
      const Outcome e = config_outcome(j);
      CHECK(e.status != Status::internal);
      CHECK(!has(e.message, "type_error"));
    }
  }
}

TEST_CASE("robustness: config.json files are depth- and size-limited", "[robustness][config]") {
  TempDir d("cfgfile");
  json j = flash();
  std::string text = j.dump();
  text.insert(text.size() - 1, R"(,"extra":)" + nest("{\"a\":", "1", "}", 100000));
  write_file(d.path / "config.json", text);
  const Outcome o = outcome_of([&] { ModelConfig::from_file((d.path / "config.json").string()); });
  CHECK(o.status == Status::format);
  CHECK(has(o.message, (d.path / "config.json").string()));
  CHECK(has(o.message, "nested deeper than 64"));
  write_file(d.path / "config.json", j.dump() + std::string(17u << 20, ' '));
  CHECK(has(outcome_of([&] { ModelConfig::from_file((d.path / "config.json").string()); }).message, "-byte limit"));
}

TEST_CASE("robustness: a config far larger than its checkpoint is one validation problem", "[robustness][config]") {
  TempDir d("census");
  SafetensorsWriter w;
  w.add_values<float>("a", DType::F32, {1}, {1.0f});
  w.write((d.path / "model.safetensors").string());
  json j = flash();
  j["num_hidden_layers"] = 512;
  j["n_routed_experts"] = 4096;
  j["compress_ratios"] = json::array();
  for (int i = 0; i <= 512; ++i) j["compress_ratios"].push_back(0);
  const ModelConfig cfg = ModelConfig::from_json(j);
  const Checkpoint ck(d.path.string());
  const auto t0 = std::chrono::steady_clock::now();
  const ValidationReport rep = validate_checkpoint(ck, cfg);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  REQUIRE(rep.problems.size() == 1);
  CHECK(has(rep.problems[0], "the config describes"));
  // A small mismatch still lists each tensor.
  const ValidationReport tiny = validate_checkpoint(ck, preset_config("tiny"));
  CHECK(tiny.problems.size() > 100);
}

TEST_CASE("robustness: dsv4 inspect rejects an unbounded hc_sinkhorn_iters at once", "[robustness][config][cli]") {
  TempDir d("inspect");
  json j = flash();
  j["hc_sinkhorn_iters"] = 2147483647;
  write_file(d.path / "config.json", j.dump());
  const std::string cmd = "'" + std::string(DSV4_CLI_PATH) + "' inspect '" + d.path.string() + "' >'" +
                          (d.path / "out").string() + "' 2>&1";
  const int st = std::system(cmd.c_str());
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) != 0));
  std::ifstream in(d.path / "out");
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  CHECK(has(out, "'hc_sinkhorn_iters' = 2147483647 exceeds the limit 1000"));
}
