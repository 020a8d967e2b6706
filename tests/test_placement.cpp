// Expert placement for the single-GPU offload (dsv4/placement.hpp): the budget planner (most used
// records resident, deterministic ties, uniform without statistics), the usage / placement files
// (round trip, every malformed field rejected with its name), the router statistics the CPU
// backend collects (per layer tokens × top-k; hash layers exactly as tid2eid dictates), and
// `dsv4 calibrate`.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "catch.hpp"
#include "fixture.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/placement.hpp"
#include "dsv4/safetensors.hpp"

namespace {
namespace fs = std::filesystem;

dsv4::ModelConfig small_config(int layers, int experts, int mtp = 0) {
  dsv4::ModelConfig c;
  c.num_layers = layers;
  c.num_mtp_layers = mtp;
  c.n_routed_experts = experts;
  c.experts_per_token = 2;
  return c;
}

std::string temp(const std::string& name) { return (fs::temp_directory_path() / name).string(); }

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("plan_placement keeps the most used records resident under the budget", "[placement]") {
  const dsv4::ModelConfig cfg = small_config(2, 4, 1);  // 3 MoE rows × 4 experts
  dsv4::ExpertUsage u = dsv4::empty_usage(cfg);
  REQUIRE(u.layers == 3);
  const int64_t counts[] = {5, 0, 9, 1, /**/ 9, 2, 2, 7, /**/ 0, 0, 0, 3};
  std::copy(std::begin(counts), std::end(counts), u.counts.begin());
  // 5 records of 10 bytes fit in 57 bytes: 9 (0,2), 9 (1,0), 7 (1,3), 5 (0,0), then the tie 3 (2,3).
  const dsv4::ExpertPlacement p = dsv4::plan_placement(cfg, &u, 10, 57);
  CHECK(p.resident() == 5);
  CHECK(p.offloaded_count() == 7);
  const std::set<std::pair<int, int>> want = {{0, 2}, {1, 0}, {1, 3}, {0, 0}, {2, 3}};
  for (int l = 0; l < 3; ++l)
    for (int e = 0; e < 4; ++e) CHECK(p.is_offloaded(l, e) == !want.count({l, e}));
  // Ties to the lower (layer, expert): counts 2 at (1,1) and (1,2), one place left.
  const dsv4::ExpertPlacement q = dsv4::plan_placement(cfg, &u, 10, 65);
  CHECK(!q.is_offloaded(1, 1));
  CHECK(q.is_offloaded(1, 2));
  // No statistics: uniform, the (layer, expert) order decides.
  const dsv4::ExpertPlacement r = dsv4::plan_placement(cfg, nullptr, 10, 35);
  CHECK(r.resident() == 3);
  CHECK((!r.is_offloaded(0, 0) && !r.is_offloaded(0, 1) && !r.is_offloaded(0, 2) && r.is_offloaded(0, 3)));
  // Everything fits / nothing fits.
  CHECK(dsv4::plan_placement(cfg, &u, 10, 1000).offloaded_count() == 0);
  CHECK(dsv4::plan_placement(cfg, &u, 10, 9).resident() == 0);
  // Bad arguments.
  CHECK_THROWS_AS(dsv4::plan_placement(cfg, &u, 0, 10), dsv4::Error);
  CHECK_THROWS_AS(dsv4::plan_placement(cfg, &u, 10, -1), dsv4::Error);
  dsv4::ExpertUsage wrong = dsv4::empty_usage(small_config(2, 5));
  CHECK_THROWS_AS(dsv4::plan_placement(cfg, &wrong, 10, 10), dsv4::Error);
}

TEST_CASE("usage and placement files round-trip and reject malformed fields", "[placement]") {
  const dsv4::ModelConfig cfg = small_config(2, 3);
  dsv4::ExpertUsage u = dsv4::empty_usage(cfg);
  for (size_t i = 0; i < u.counts.size(); ++i) u.counts[i] = static_cast<int64_t>(i * 7 % 5);
  u.tokens = 11;
  const std::string up = temp("dsv4_usage_test.json"), pp = temp("dsv4_placement_test.json");
  dsv4::write_usage(up, u);
  const dsv4::ExpertUsage u2 = dsv4::read_usage(up, cfg);
  CHECK(u2.counts == u.counts);
  CHECK(u2.tokens == 11);
  CHECK(u2.top_k == 2);
  const dsv4::ExpertPlacement p = dsv4::plan_placement(cfg, &u, 100, 250);
  dsv4::write_placement(pp, p);
  const dsv4::ExpertPlacement p2 = dsv4::read_placement(pp, cfg);
  CHECK(p2.offloaded == p.offloaded);
  CHECK(p2.record_bytes == 100);
  CHECK(p2.budget_bytes == 250);
  CHECK_THROWS_AS(dsv4::read_usage(up, small_config(3, 3)), dsv4::Error);  // another model's shape

  struct Bad {
    const char* what;
    std::string text;
    const char* field;  // named in the message
  };
  const std::string head = R"("version": 1, "layers": 2, "experts": 3, )";
  const Bad bad_usage[] = {
      {"wrong format", R"({"format": "x", )" + head + R"("tokens": 1, "top_k": 2, "counts": [[0,0,0],[0,0,0]]})", "format"},
      {"no counts", R"({"format": "dsv4-expert-usage", )" + head + R"("tokens": 1, "top_k": 2})", "counts"},
      {"short row", R"({"format": "dsv4-expert-usage", )" + head + R"("tokens": 1, "top_k": 2, "counts": [[0,0],[0,0,0]]})", "counts[0]"},
      {"negative", R"({"format": "dsv4-expert-usage", )" + head + R"("tokens": 1, "top_k": 2, "counts": [[0,-1,0],[0,0,0]]})", "counts[0][1]"},
      {"version", R"({"format": "dsv4-expert-usage", "version": 2, "layers": 2, "experts": 3, "tokens": 1, "top_k": 2, "counts": []})", "version"},
      {"not json", "{", "dsv4_bad.json"},
  };
  const std::string bp = temp("dsv4_bad.json");
  for (const Bad& b : bad_usage) {
    INFO(b.what);
    write_text(bp, b.text);
    try {
      (void)dsv4::read_usage(bp, cfg);
      FAIL("accepted");
    } catch (const dsv4::Error& e) {
      CHECK(std::string(e.what()).find(b.field) != std::string::npos);
    }
  }
  const std::string phead = R"({"format": "dsv4-expert-placement", )" + head + R"("record_bytes": 10, "budget_bytes": 10, )";
  const Bad bad_placement[] = {
      {"descending ids", phead + R"("resident": 3, "offloaded": [[2,1],[0]]})", "offloaded[0]"},
      {"id out of range", phead + R"("resident": 4, "offloaded": [[3],[0]]})", "offloaded[0]"},
      {"resident mismatch", phead + R"("resident": 1, "offloaded": [[0],[1]]})", "resident"},
      {"rows", phead + R"("resident": 6, "offloaded": [[]]})", "offloaded"},
      {"record bytes", R"({"format": "dsv4-expert-placement", )" + head + R"("record_bytes": 0, "budget_bytes": 1, "resident": 6, "offloaded": [[],[]]})", "record_bytes"},
  };
  for (const Bad& b : bad_placement) {
    INFO(b.what);
    write_text(bp, b.text);
    try {
      (void)dsv4::read_placement(bp, cfg);
      FAIL("accepted");
    } catch (const dsv4::Error& e) {
      CHECK(std::string(e.what()).find(b.field) != std::string::npos);
    }
  }
  fs::remove(up);
  fs::remove(pp);
  fs::remove(bp);
}

TEST_CASE("the CPU backend counts the router's choices; hash layers follow tid2eid", "[placement][fixtures]") {
  auto f = dsv4_test::open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  dsv4::LoadOptions o;
  o.load_tokenizer = false;
  auto m = dsv4::Model::load(f->dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn));
  const dsv4::ModelConfig& cfg = m->config();
  auto& cpu = dynamic_cast<dsv4::cpu::CpuBackend&>(m->backend());
  dsv4::ExpertUsage u = dsv4::empty_usage(cfg);
  cpu.set_expert_usage(&u);
  const std::vector<int32_t> ids = f->ids("prompt1.input_ids");
  const dsv4::SeqHandle h = cpu.create_sequence(static_cast<int64_t>(ids.size()));
  for (size_t p = 0; p < ids.size(); p += 37) {  // chunks: the counts do not depend on them
    dsv4::ForwardChunk c;
    c.seq = h;
    c.tokens = std::span<const int32_t>(ids).subspan(p, std::min<size_t>(37, ids.size() - p));
    c.logits = dsv4::LogitsMode::none;
    REQUIRE(cpu.forward({&c, 1}).ok());
  }
  cpu.release_sequence(h);
  cpu.set_expert_usage(nullptr);
  CHECK(u.tokens == static_cast<int64_t>(ids.size()));
  const dsv4::Checkpoint ck(f->dir + "/model");
  for (int l = 0; l < cfg.num_layers; ++l) {
    INFO("layer " << l);
    int64_t sum = 0;
    for (int64_t e = 0; e < u.experts; ++e) sum += u.at(l, e);
    if (l >= cfg.num_hash_layers) {
      CHECK(sum == static_cast<int64_t>(ids.size()) * cfg.experts_per_token);  // K distinct per token
      continue;
    }
    // Hash layer: each token's first K tid2eid entries (distinct ones).
    const std::vector<int32_t> t2e = dsv4::to_i32(ck.get(fmt::format("layers.{}.ffn.gate.tid2eid", l)));
    const int64_t cols = static_cast<int64_t>(t2e.size()) / cfg.vocab_size;
    std::vector<int64_t> want(static_cast<size_t>(u.experts), 0);
    for (int32_t t : ids) {
      std::set<int32_t> seen;
      for (int k = 0; k < cfg.experts_per_token; ++k) seen.insert(t2e[static_cast<size_t>(t * cols + k)]);
      for (int32_t e : seen) ++want[static_cast<size_t>(e)];
    }
    for (int64_t e = 0; e < u.experts; ++e) CHECK(u.at(l, e) == want[static_cast<size_t>(e)]);
  }
  if (cfg.num_mtp_layers > 0)
    for (int64_t e = 0; e < u.experts; ++e) CHECK(u.at(cfg.num_layers, e) == 0);  // the MTP block did not run
  dsv4::ExpertUsage wrong = dsv4::empty_usage(cfg);
  wrong.experts += 1;
  CHECK_THROWS_AS(cpu.set_expert_usage(&wrong), dsv4::Error);
}

TEST_CASE("dsv4 calibrate writes the usage and the placement for a budget", "[placement][fixtures][cli]") {
  auto f = dsv4_test::open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  const std::vector<int32_t> ids = f->ids("prompt4.input_ids");
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? (i % 10 ? "," : "\n") : "") + std::to_string(ids[i]);
  const std::string in = temp("dsv4_calib_ids.txt"), up = temp("dsv4_calib_usage.json"),
                    pp = temp("dsv4_calib_plan.json");
  write_text(in, text);
  const std::string cmd = fmt::format("DSV4_LOG_LEVEL=warn '{}' calibrate --model '{}/model' --ids-file '{}' --out '{}' "
                                      "--chunk 50 --plan '{}' --expert-memory 0.0004",
                                      DSV4_CLI_PATH, f->dir, in, up, pp);
  REQUIRE(std::system(cmd.c_str()) == 0);
  const dsv4::ModelConfig cfg = dsv4::ModelConfig::from_file(f->dir + "/model/config.json");
  const dsv4::ExpertUsage u = dsv4::read_usage(up, cfg);
  CHECK(u.tokens == static_cast<int64_t>(ids.size()));
  const dsv4::ExpertPlacement p = dsv4::read_placement(pp, cfg);
  CHECK(p.record_bytes > 0);
  CHECK(p.resident() == std::min<int64_t>(p.layers * p.experts, 400000 / p.record_bytes));
  // The plan is plan_placement of the written statistics.
  CHECK(dsv4::plan_placement(cfg, &u, p.record_bytes, p.budget_bytes).offloaded == p.offloaded);
  // Bad input: an id outside the vocabulary, and no input at all.
  write_text(in, "1,2,999999");
  CHECK(std::system(fmt::format("'{}' calibrate --model '{}/model' --ids-file '{}' --out '{}' 2>/dev/null", DSV4_CLI_PATH,
                                f->dir, in, up)
                        .c_str()) != 0);
  CHECK(std::system(fmt::format("'{}' calibrate --model '{}/model' --out '{}' 2>/dev/null", DSV4_CLI_PATH, f->dir, up)
                        .c_str()) != 0);
  fs::remove(in);
  fs::remove(up);
  fs::remove(pp);
}
