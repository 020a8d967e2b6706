// Expert parallelism (dsv4/expert_parallel.hpp, docs/expert-parallel.md): the sharding plan for
// world sizes 1–8 against the Flash config and the fixtures' checkpoints, the CPU combine's
// summation orders, and the multi-rank emulation on the CPU backend against the float64 fixture
// logits for 2, 3 and 4 ranks (the exact combine bit-identical to one rank, the partial-sum
// combine within f32 rounding of it), plus `dsv4 eval-logits --ep-ranks`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "catch.hpp"
#include "fixture.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/config.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/expert_parallel.hpp"
#include "dsv4/model_gen.hpp"
#include "dsv4/safetensors.hpp"

namespace {
using dsv4_test::open_fixture;

void check_blocks(const dsv4::EpPlan& p) {
  const int64_t E = p.n_experts;
  REQUIRE(static_cast<int64_t>(p.owner.size()) == E);
  int64_t total = 0;
  for (int r = 0; r < p.world; ++r) {
    const int64_t c = p.count[static_cast<size_t>(r)];
    CHECK((c == E / p.world || c == (E + p.world - 1) / p.world));  // balanced to one expert
    CHECK(p.first[static_cast<size_t>(r)] == total);                 // contiguous, in rank order
    for (int64_t e = total; e < total + c; ++e) CHECK(p.owner[static_cast<size_t>(e)] == r);
    total += c;
  }
  CHECK(total == E);
}

}  // namespace

TEST_CASE("routed_expert_of names the routed expert of a tensor, -1 for a replicated one", "[ep]") {
  CHECK(dsv4::routed_expert_of("layers.3.ffn.experts.17.w1.weight") == 17);
  CHECK(dsv4::routed_expert_of("layers.0.ffn.experts.0.w2.scale") == 0);
  CHECK(dsv4::routed_expert_of("mtp.0.ffn.experts.255.w3.weight") == 255);
  CHECK(dsv4::routed_expert_of("layers.3.ffn.shared_experts.w1.weight") == -1);
  CHECK(dsv4::routed_expert_of("layers.3.ffn.gate.weight") == -1);
  CHECK(dsv4::routed_expert_of("layers.3.ffn.experts.w1") == -1);
  CHECK(dsv4::routed_expert_of("layers.3.ffn.experts.12") == -1);
  CHECK(dsv4::routed_expert_of("embed.weight") == -1);
}

TEST_CASE("EP plan over the Flash config: contiguous balanced blocks for world sizes 1-8", "[ep]") {
  dsv4::ModelConfig cfg = dsv4::preset_config("flash");
  for (int w = 1; w <= 8; ++w) {
    INFO("world " << w);
    const dsv4::EpPlan p = dsv4::make_ep_plan(cfg, w);
    CHECK(p.world == w);
    check_blocks(p);
    for (int64_t e = 0; e < cfg.n_routed_experts; ++e) CHECK(dsv4::ep_owner(e, cfg.n_routed_experts, w) == p.owner[e]);
  }
  // 256 experts: 128 / 64 / 32 per rank at 2 / 4 / 8.
  CHECK(dsv4::make_ep_plan(cfg, 8).count[7] == 32);
  CHECK(dsv4::make_ep_plan(cfg, 3).count == std::vector<int64_t>{86, 85, 85});
  CHECK_THROWS_AS(dsv4::make_ep_plan(cfg, 0), dsv4::Error);
  CHECK_THROWS_AS(dsv4::make_ep_plan(cfg, dsv4::kMaxEpWorld + 1), dsv4::Error);
  cfg.n_routed_experts = 3;
  CHECK_THROWS_AS(dsv4::make_ep_plan(cfg, 4), dsv4::Error);  // more ranks than experts
}

TEST_CASE("EP plan over the fixtures' checkpoints: who reads which tensor from which shard", "[ep][fixtures]") {
  for (const char* name : {"tiny-a", "tiny-b"}) {
    auto f = open_fixture(name);
    if (!f) {
      WARN(std::string("../shared/fixtures/") + name + " not found: test skipped");
      continue;
    }
    INFO(name);
    const dsv4::ModelConfig cfg = dsv4::ModelConfig::from_file(f->dir + "/model/config.json");
    const dsv4::Checkpoint ck(f->dir + "/model");
    size_t replicated = 0, experts = 0;
    for (const std::string& n : ck.names()) (dsv4::routed_expert_of(n) >= 0 ? experts : replicated) += ck.get(n).nbytes;
    REQUIRE(experts > 0);
    for (int w = 1; w <= std::min<int64_t>(8, cfg.n_routed_experts); ++w) {
      INFO("world " << w);
      const dsv4::EpPlan p = dsv4::make_ep_plan(cfg, ck, w);
      check_blocks(p);
      size_t expert_sum = 0;
      std::set<std::string> seen;
      for (int r = 0; r < w; ++r) {
        for (const dsv4::EpRead& rd : p.reads[static_cast<size_t>(r)]) {
          const int64_t e = dsv4::routed_expert_of(rd.tensor);
          if (e >= 0) CHECK(p.owner[static_cast<size_t>(e)] == r);  // a routed expert: its owner only
          CHECK(rd.bytes == ck.get(rd.tensor).nbytes);
          CHECK(std::filesystem::exists(rd.file));
          seen.insert(rd.tensor);
        }
        CHECK(p.bytes[static_cast<size_t>(r)] == replicated + p.expert_bytes[static_cast<size_t>(r)]);
        expert_sum += p.expert_bytes[static_cast<size_t>(r)];
      }
      CHECK(expert_sum == experts);               // every routed expert read exactly once
      CHECK(seen.size() == ck.names().size());    // every tensor read by some rank
    }
  }
}

TEST_CASE("EP combine on the CPU: partial sums in rank order, exact in ascending expert id", "[ep]") {
  // Three ranks, one row of width 1: the two modes' orders are observable in f32.
  const float big = 1.0e8f, small = 3.0f;
  dsv4::EpCombineCpu partial(dsv4::EpCombine::partial, 3, 1, 1, true);
  partial.contribute_partial(2, std::vector<double>{-big});
  partial.contribute_partial(0, std::vector<double>{big});
  partial.contribute_partial(1, std::vector<double>{small});
  std::vector<double> out(1);
  partial.reduce(out);
  CHECK(out[0] == static_cast<double>((0.0f + big + small) - big));  // ((p0 + p1) + p2) in f32

  dsv4::EpCombineCpu exact(dsv4::EpCombine::exact, 3, 2, 1, true);
  exact.contribute_slot(2, 0, 9, std::vector<double>{small});
  exact.contribute_slot(0, 0, 1, std::vector<double>{big});
  exact.contribute_slot(1, 0, 5, std::vector<double>{-big});
  exact.contribute_slot(1, 1, 4, std::vector<double>{7.0});
  std::vector<double> out2(2);
  exact.reduce(out2);
  CHECK(out2[0] == static_cast<double>((0.0f + big - big) + small));  // experts 1, 5, 9
  CHECK(out2[1] == 7.0);

  dsv4::EpCombineCpu missing(dsv4::EpCombine::partial, 2, 1, 1, false);
  missing.contribute_partial(0, std::vector<double>{1.0});
  CHECK_THROWS_AS(missing.reduce(out), dsv4::Error);  // rank 1 never contributed
  CHECK_THROWS_AS(missing.contribute_partial(0, std::vector<double>{1.0}), dsv4::Error);  // twice
}

namespace {

std::unique_ptr<dsv4::Model> load(const dsv4_test::Fixture& f, dsv4::Numerics num, int ranks, const char* combine) {
  dsv4::LoadOptions o;
  o.load_tokenizer = false;
  o.numerics = num;
  if (num == dsv4::Numerics::reference) o.backend_params.emplace_back("indexer_ties", "torch-cpu");
  o.backend_params.emplace_back("ep_ranks", std::to_string(ranks));
  o.backend_params.emplace_back("ep_combine", combine);
  return dsv4::Model::load(f.dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn));
}

std::vector<float> logits(const dsv4::Model& m, const std::vector<int32_t>& ids) {
  dsv4::Backend& be = m.backend();
  const dsv4::SeqHandle h = be.create_sequence(static_cast<int64_t>(ids.size()));
  std::vector<float> rows;
  dsv4::ForwardChunk c;
  c.seq = h;
  c.tokens = ids;
  c.logits = dsv4::LogitsMode::all;
  c.logits_out = &rows;
  REQUIRE(be.forward({&c, 1}).ok());
  be.release_sequence(h);
  return rows;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST_CASE("EP emulated on the CPU reproduces the fixture logits over 2, 3 and 4 ranks", "[ep][fixtures][forward]") {
  auto f = open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  for (dsv4::Numerics num : {dsv4::Numerics::reference, dsv4::Numerics::official}) {
    const bool official = num == dsv4::Numerics::official;
    INFO((official ? "official" : "reference") << " numerics");
    auto one = load(*f, num, 1, "partial");
    for (int i = 0; i < f->prompts(); ++i) {
      INFO("prompt " << i);
      const auto ids = f->ids(fmt::format("prompt{}.input_ids", i));
      const std::vector<float> base = logits(*one, ids);
      if (!official) CHECK(max_abs_diff(base, f->f32(fmt::format("prompt{}.logits", i))) <= 1e-3);
      for (int w : {2, 3, 4}) {
        INFO("world " << w);
        // exact combine: the one-rank summation order, so the very same bits.
        const std::vector<float> ex = logits(*load(*f, num, w, "exact"), ids);
        CHECK(ex == base);
        // partial sums in rank order: another f32 / double summation order of the routed sum. In
        // reference numerics within f32 noise of one rank and within the fixture's 1e-3; in
        // official numerics a bf16 rounding boundary may flip (≤ a few bf16 ulps of a logit).
        const std::vector<float> pa = logits(*load(*f, num, w, "partial"), ids);
        std::printf("tiny-a %s prompt %d, %d ranks: exact combine %s one rank; partial-sum combine max |Δlogit| %.3g\n",
                    official ? "official" : "reference", i, w, ex == base ? "bit-identical to" : "DIFFERS from",
                    max_abs_diff(pa, base));
        if (!official) {
          CHECK(max_abs_diff(pa, base) <= 1e-5);
          CHECK(max_abs_diff(pa, f->f32(fmt::format("prompt{}.logits", i))) <= 1e-3);
        } else {
          CHECK(max_abs_diff(pa, base) <= 0.25);
        }
      }
    }
  }
}

TEST_CASE("EP settings are validated", "[ep]") {
  auto f = open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  for (const char* bad : {"0", "-1", "x", "1000"}) {
    INFO(bad);
    dsv4::LoadOptions o;
    o.load_tokenizer = false;
    o.backend_params.emplace_back("ep_ranks", bad);
    CHECK_THROWS_AS(dsv4::Model::load(f->dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn)), dsv4::Error);
  }
  dsv4::LoadOptions o;
  o.load_tokenizer = false;
  o.backend_params.emplace_back("ep_combine", "sideways");
  CHECK_THROWS_AS(dsv4::Model::load(f->dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn)), dsv4::Error);
}

TEST_CASE("dsv4 eval-logits --ep-ranks runs the emulation from the command line", "[ep][fixtures][cli]") {
  auto f = open_fixture("tiny-a");
  if (!f) {
    WARN("../shared/fixtures/tiny-a not found: test skipped");
    return;
  }
  const std::string out = (std::filesystem::temp_directory_path() / "dsv4_ep_eval.safetensors").string();
  const std::string cmd = fmt::format("DSV4_LOG_LEVEL=warn '{}' eval-logits --model '{}/model' --input "
                                      "'{}/reference.safetensors' --out '{}' --ep-ranks 3 --ep-combine exact",
                                      DSV4_CLI_PATH, f->dir, f->dir, out);
  REQUIRE(std::system(cmd.c_str()) == 0);
  dsv4::SafetensorsFile got(out);
  for (int i = 0; i < f->prompts(); ++i) {
    INFO("prompt " << i);
    CHECK(max_abs_diff(dsv4::to_f32(got.get(fmt::format("prompt{}.logits", i))),
                       f->f32(fmt::format("prompt{}.logits", i))) <= 1e-3);
  }
  std::filesystem::remove(out);
  const std::string bad = fmt::format("'{}' eval-logits --model '{}/model' --input '{}/reference.safetensors' --out '{}' "
                                      "--ep-ranks 0 2>/dev/null",
                                      DSV4_CLI_PATH, f->dir, f->dir, out);
  CHECK(std::system(bad.c_str()) != 0);
  const std::string twice = fmt::format("'{}' eval-logits --model '{}/model' --input '{}/reference.safetensors' --out '{}' "
                                        "--devices 0,0 2>/dev/null",
                                        DSV4_CLI_PATH, f->dir, f->dir, out);
  CHECK(std::system(twice.c_str()) != 0);  // a device listed twice
}
