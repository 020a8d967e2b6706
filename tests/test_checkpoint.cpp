// Checkpoint-level foundation tests: the fixtures validate and their dequantised tensors equal an
// independent decoding (bit fields → ldexp, written here from spec §2.2/§2.3, not dtypes.hpp);
// validation reports every problem at once; the generator is deterministic, writes what the
// validator expects, and `dsv4 inspect` reports the census and fails on a broken checkpoint.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "dsv4/checkpoint_schema.hpp"
#include "dsv4/model_gen.hpp"
#include "dsv4/quant.hpp"

using namespace dsv4;
namespace fs = std::filesystem;

namespace {
double ref_e4m3(uint8_t c) {
  int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return s ? -v : v;
}
double ref_e2m1(int c) {
  int s = c >> 3, e = (c >> 1) & 3, m = c & 1;
  double v = e == 0 ? 0.5 * m : std::ldexp(2 + m, e - 2);
  return s ? -v : v;
}
double ref_e8m0(uint8_t e) { return std::ldexp(1.0, e - 127); }
fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("dsv4_test_ck_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}
std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *rc = WEXITSTATUS(::pclose(p));
  return out;
}
ModelConfig small_config() {
  ModelConfig c = preset_config("tiny");
  apply_overrides(c, 4, 4, 2);
  nlohmann::json j = c.to_json();
  j["vocab_size"] = 300;  // keep the test checkpoint a few MB
  return ModelConfig::from_json(j);
}
}  // namespace

TEST_CASE("fixtures validate and dequantise exactly like an independent decoder", "[checkpoint]") {
  for (const char* fx : {"tiny-a", "tiny-b"}) {
    const std::string dir = dsv4_test::shared_dir() + "/fixtures/" + fx + "/model";
    if (!fs::exists(dir)) {
      WARN("SKIP: ../shared fixtures not present");
      return;
    }
    ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
    Checkpoint ck(dir);
    ValidationReport rep = validate_checkpoint(ck, cfg);
    for (const auto& p : rep.problems) UNSCOPED_INFO(p);
    CHECK(rep.ok());

    const TensorView& w = ck.get("layers.2.attn.wq_b.weight");
    const TensorView& s = ck.get("layers.2.attn.wq_b.scale");
    std::vector<float> d = dequant_fp8(w, s);
    const int64_t in = w.shape[1], sc = s.shape[1];
    size_t nonzero = 0;
    for (int64_t o = 0; o < w.shape[0]; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double want = ref_e4m3(w.data[o * in + i]) * ref_e8m0(s.data[(o / 128) * sc + i / 128]);
        REQUIRE(d[static_cast<size_t>(o * in + i)] == want);
        nonzero += want != 0;
      }
    CHECK(nonzero > d.size() / 2);

    const TensorView& ew = ck.get("layers.3.ffn.experts.1.w2.weight");
    const TensorView& es = ck.get("layers.3.ffn.experts.1.w2.scale");
    std::vector<float> e = dequant_fp4(ew, es);
    const int64_t ein = ew.shape[1] * 2, esc = es.shape[1];
    for (int64_t o = 0; o < ew.shape[0]; ++o)
      for (int64_t i = 0; i < ein; ++i) {
        uint8_t byte = ew.data[o * (ein / 2) + i / 2];
        int code = (i % 2 == 0) ? (byte & 15) : (byte >> 4);
        REQUIRE(e[static_cast<size_t>(o * ein + i)] == ref_e2m1(code) * ref_e8m0(es.data[o * esc + i / 32]));
      }
    std::vector<int32_t> ids = to_i32(ck.get("layers.0.ffn.gate.tid2eid"));
    for (int32_t id : ids) REQUIRE((id >= 0 && id < cfg.n_routed_experts));
  }
}

TEST_CASE("validation reports every problem at once", "[checkpoint][errors]") {
  ModelConfig cfg = small_config();
  fs::path dir = temp_dir("broken");
  GenerateOptions opt;
  opt.out_dir = dir.string();
  generate_model(cfg, opt, Logger(LogLevel::warn));
  Checkpoint good(dir.string());
  CHECK(validate_checkpoint(good, cfg).ok());

  // Rewrite the checkpoint with three defects: a wrong shape, a missing tensor, an extra tensor.
  SafetensorsWriter w;
  for (const auto& name : good.names()) {
    const TensorView& t = good.get(name);
    if (name == "layers.1.attn.wkv.scale") continue;
    std::vector<int64_t> shape = t.shape;
    std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
    if (name == "norm.weight") { shape = {shape[0] / 2}; bytes.resize(bytes.size() / 2); }
    w.add(name, t.dtype, shape, bytes);
  }
  w.add_values("layers.9.surprise", DType::F32, {1}, std::vector<float>{1});
  fs::path bad = temp_dir("broken2");
  w.write_sharded(bad.string(), 1 << 20);
  ValidationReport rep = validate_checkpoint(Checkpoint(bad.string()), cfg);
  REQUIRE(rep.problems.size() == 3);
  std::string all;
  for (const auto& p : rep.problems) all += p + "\n";
  CHECK(all.find("missing tensor 'layers.1.attn.wkv.scale'") != std::string::npos);
  CHECK(all.find("tensor 'norm.weight': shape [128]") != std::string::npos);
  CHECK(all.find("unexpected tensor 'layers.9.surprise'") != std::string::npos);

  // Wrong config against a good checkpoint: every expert count mismatch is reported.
  ModelConfig other = cfg;
  other.n_routed_experts = 5;
  CHECK(validate_checkpoint(good, other).problems.size() > 5);
  fs::remove_all(dir);
  fs::remove_all(bad);
}

TEST_CASE("the generator is deterministic, seeded, O(1)-scaled and 4-Expert aware", "[checkpoint][generator]") {
  ModelConfig cfg = small_config();
  fs::path a = temp_dir("gen_a"), b = temp_dir("gen_b"), c = temp_dir("gen_c");
  GenerateOptions opt;
  opt.seed = 7;
  opt.out_dir = a.string();
  generate_model(cfg, opt, Logger(LogLevel::warn));
  opt.out_dir = b.string();
  generate_model(cfg, opt, Logger(LogLevel::warn));
  opt.seed = 8;
  opt.out_dir = c.string();
  generate_model(cfg, opt, Logger(LogLevel::warn));
  Checkpoint ca(a.string()), cb(b.string()), cc(c.string());
  size_t differ = 0;
  for (const auto& n : ca.names()) {
    const TensorView &x = ca.get(n), &y = cb.get(n), &z = cc.get(n);
    REQUIRE(std::equal(x.data, x.data + x.nbytes, y.data));
    differ += !std::equal(x.data, x.data + x.nbytes, z.data);
  }
  CHECK(differ > ca.names().size() / 2);

  // Weights scaled by 1/sqrt(fan_in): a dequantised projection has row norms O(1).
  std::vector<float> w = dequant_fp8(ca.get("layers.0.attn.wq_a.weight"), ca.get("layers.0.attn.wq_a.scale"));
  double ss = 0;
  for (float v : w) ss += double(v) * v;
  const double rows = static_cast<double>(cfg.q_lora_rank);
  CHECK(std::sqrt(ss / rows) > 0.5);
  CHECK(std::sqrt(ss / rows) < 2.0);
  std::vector<float> e = dequant_fp4(ca.get("layers.3.ffn.experts.0.w1.weight"), ca.get("layers.3.ffn.experts.0.w1.scale"));
  ss = 0;
  for (float v : e) ss += double(v) * v;
  CHECK(std::sqrt(ss / cfg.moe_intermediate_size) > 0.3);
  CHECK(std::sqrt(ss / cfg.moe_intermediate_size) < 3.0);
  // tid2eid has K columns (here the 2 of --experts-per-token) with distinct ids per row.
  const TensorView& t = ca.get("layers.0.ffn.gate.tid2eid");
  CHECK(t.shape == std::vector<int64_t>{cfg.vocab_size, 2});
  std::vector<int32_t> ids = to_i32(t);
  for (size_t r = 0; r < ids.size(); r += 2) REQUIRE(ids[r] != ids[r + 1]);
  for (auto& p : {a, b, c}) fs::remove_all(p);
}

TEST_CASE("dsv4 inspect reports the census and fails on an invalid checkpoint", "[checkpoint][cli]") {
  int rc = 0;
  const std::string fx = dsv4_test::shared_dir() + "/fixtures/tiny-a/model";
  if (fs::exists(fx)) {
    std::string out = run(std::string(DSV4_CLI_PATH) + " inspect " + fx, &rc);
    CHECK(rc == 0);
    // tiny-a's census (counted from its index and headers independently of our reader).
    CHECK(out.find("BF16             61          1619072") != std::string::npos);
    CHECK(out.find("F8_E8M0         228           129169") != std::string::npos);
    CHECK(out.find("I8              168          2064384") != std::string::npos);
    CHECK(out.find("validation   OK") != std::string::npos);
  } else {
    WARN("SKIP: tiny-a fixture not present for the inspect census check");
  }
  fs::path d = temp_dir("cli");
  std::string out = run(std::string(DSV4_CLI_PATH) + " make-model --preset flash --layers 1 --experts 2 --experts-per-token 2 --tokenizer '' --out " + d.string(), &rc);
  REQUIRE(rc == 0);
  out = run(std::string(DSV4_CLI_PATH) + " inspect " + d.string(), &rc);
  CHECK(rc == 0);
  CHECK(out.find("hidden       4096") != std::string::npos);
  CHECK(out.find("validation   OK") != std::string::npos);
  // Corrupt the config: 3 experts expected, 2 present → exit 1 with the missing tensors named.
  nlohmann::json j;
  std::ifstream(d / "config.json") >> j;
  j["n_routed_experts"] = 3;
  std::ofstream(d / "config.json") << j.dump();
  out = run(std::string(DSV4_CLI_PATH) + " inspect " + d.string(), &rc);
  CHECK(rc == 1);
  CHECK(out.find("missing tensor 'layers.0.ffn.experts.2.w1.weight'") != std::string::npos);
  out = run(std::string(DSV4_CLI_PATH) + " inspect /nonexistent/model", &rc);
  CHECK(rc == 1);
  CHECK(out.find("/nonexistent/model/config.json: cannot open") != std::string::npos);
  fs::remove_all(d);
}
