// The CPU reference forward pass against ../shared/fixtures (transformers float64, shared expert
// unclamped): every prompt's logits for full prefill, the suggested chunk schedule and one token at
// a time; the experts-per-token override; greedy continuation (library and CLI); the hidden-state
// dumps layer by layer. Tolerance 1e-3 on logits (fixtures README: f32 reference vs f64 oracle).
// Skips (with a warning) when ../shared is absent.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "catch.hpp"
#include "fixture.hpp"
#include "dsv4/backend.hpp"
#include "dsv4/cpu/cpu_backend.hpp"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/quant.hpp"
#include "dsv4/safetensors.hpp"

namespace {
namespace fs = std::filesystem;
using dsv4_test::Fixture;
using dsv4_test::open_fixture;
constexpr double kTol = 1e-3;

std::unique_ptr<dsv4::Model> load(const Fixture& f, int experts = 0, bool torch_cpu_ties = false) {
  dsv4::LoadOptions o;
  o.experts_per_token = experts;
  o.load_tokenizer = false;
  if (torch_cpu_ties) o.backend_params.emplace_back("indexer_ties", "torch-cpu");
  return dsv4::Model::load(f.dir + "/model", o, dsv4::Logger(dsv4::LogLevel::warn));
}


struct RunResult {
  std::vector<float> logits;  // [T, V]
  int64_t first_tie = -1;     // first position whose indexer top-k boundary was tied (-1: none)
};

// Runs `ids` in the chunk sizes given (the last size repeats; empty = one chunk) on a fresh
// backend sequence, returns every logits row and where the indexer tie rule first mattered.
RunResult run(const dsv4::Model& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& sizes) {
  dsv4::Backend& be = m.backend();
  const dsv4::SeqHandle h = be.create_sequence(static_cast<int64_t>(ids.size()));
  RunResult r;
  std::vector<float> rows;
  std::vector<int64_t> ties;
  size_t pos = 0, ci = 0;
  while (pos < ids.size()) {
    const size_t want = sizes.empty() ? ids.size() : static_cast<size_t>(sizes[std::min(ci, sizes.size() - 1)]);
    const size_t n = std::min(ids.size() - pos, want);
    ++ci;
    dsv4::ForwardChunk c;
    c.seq = h;
    c.tokens = std::span<const int32_t>(ids).subspan(pos, n);
    c.logits = dsv4::LogitsMode::all;
    c.logits_out = &rows;
    const dsv4::cpu::OracleChunk extra{static_cast<int64_t>(ids.size()), &ties};
    REQUIRE(dynamic_cast<dsv4::cpu::CpuBackend&>(be).forward_oracle({&c, 1}, {&extra, 1}).ok());
    r.logits.insert(r.logits.end(), rows.begin(), rows.end());
    pos += n;
  }
  be.release_sequence(h);
  if (!ties.empty()) r.first_tie = *std::min_element(ties.begin(), ties.end());
  return r;
}

// Max |Δ| over rows [0, rows) (all when rows < 0), printing the first offending row.
double compare(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab, const std::string& what,
               int64_t rows = -1) {
  REQUIRE(got.size() == want.size());
  const size_t n = rows < 0 ? got.size() : static_cast<size_t>(rows * vocab);
  double mx = 0;
  int64_t first_bad = -1;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= kTol) && first_bad < 0) first_bad = static_cast<int64_t>(i) / vocab;
    if (!(d <= mx)) mx = d;
  }
  std::printf("  %-62s max|dlogit| = %.3g over %zu rows%s\n", what.c_str(), mx, n / static_cast<size_t>(vocab),
              first_bad >= 0 ? (" FIRST BAD ROW " + std::to_string(first_bad)).c_str() : "");
  return mx;
}

#define NEED_FIXTURE(var, name)                                   \
  auto var = open_fixture(name);                                  \
  if (!var) {                                                     \
    WARN("../shared/fixtures/" name " not found: test skipped");  \
    return;                                                       \
  }

// Rows of the reference the engine's own tie rule (lowest id) can be held to: the oracle used torch's
// CPU topk, so from the first tied indexer boundary of either run on the two rules may select
// different entries. In torch-cpu mode with oracle_length = T every chunk scores over the oracle's
// own row, so every schedule is held to every row.
int64_t comparable_rows(const RunResult& a, const RunResult& b, int64_t T) {
  int64_t r = T;
  if (a.first_tie >= 0) r = std::min(r, a.first_tie);
  if (b.first_tie >= 0) r = std::min(r, b.first_tie);
  return r;
}

void check_schedules(const std::string& name) {
  auto f = open_fixture(name);
  if (!f) {
    WARN("../shared/fixtures/" + name + " not found: test skipped");
    return;
  }
  auto oracle_mode = load(*f, 0, /*torch_cpu_ties=*/true);
  auto engine_mode = load(*f);
  const int64_t V = engine_mode->config().vocab_size;
  const auto& sched = f->meta["suggested_chunk_schedule"];
  std::vector<int64_t> suggested = sched["chunk_sizes_then_single_tokens"].get<std::vector<int64_t>>();
  suggested.push_back(1);
  for (int i = 0; i < f->prompts(); ++i) {
    const auto ids = f->ids(fmt::format("prompt{}.input_ids", i));
    const auto want = f->f32(fmt::format("prompt{}.logits", i));
    const int64_t T = static_cast<int64_t>(ids.size());
    INFO(name << " prompt " << i);
    // 1. Full forward with torch's CPU tie rule = exactly what the oracle computed: every row.
    const RunResult full = run(*oracle_mode, ids, {});
    CHECK(compare(full.logits, want, V, fmt::format("{} prompt{} full prefill", name, i)) <= kTol);
    // 2. Schedules: one token at a time, the suggested chunks (its prompt), mixed odd chunks.
    std::vector<std::pair<std::string, std::vector<int64_t>>> schedules = {{"one token at a time", {1}},
                                                                            {"chunks 3,7,129,2,64,1,5…", {3, 7, 129, 2, 64, 1, 5}}};
    if (i == sched["prompt"].get<int>()) schedules.push_back({"suggested schedule", suggested});
    const RunResult engine_full = run(*engine_mode, ids, {});
    CHECK(compare(engine_full.logits, want, V, fmt::format("{} prompt{} full prefill, lowest-id ties", name, i),
                  comparable_rows(engine_full, full, T)) <= kTol);
    for (const auto& [label, sizes] : schedules) {
      // (a) torch-cpu ties against the reference, every row;
      const RunResult r = run(*oracle_mode, ids, sizes);
      CHECK(compare(r.logits, want, V, fmt::format("{} prompt{} {}", name, i, label)) <= kTol);
      // (b) schedule invariance of the engine's own rule, every row (f32 rounding only).
      const RunResult e = run(*engine_mode, ids, sizes);
      CHECK(compare(e.logits, engine_full.logits, V, fmt::format("{} prompt{} {} vs own full prefill", name, i, label)) <=
            1e-5);
    }
  }
}
}  // namespace

TEST_CASE("tiny-a logits: full prefill, one token at a time, suggested chunks", "[forward][fixtures]") {
  check_schedules("tiny-a");
}

TEST_CASE("tiny-b logits incl. the 2300-token prompt through the real indexer", "[forward][fixtures]") {
  NEED_FIXTURE(f, "tiny-b");
  {
    auto m = load(*f);
    // 2300 tokens → 575 compressed entries > index_topk 512: the indexer really chooses.
    REQUIRE(f->ids("prompt1.input_ids").size() / 4 > static_cast<size_t>(m->config().index_topk));
  }
  check_schedules("tiny-b");
}

TEST_CASE("experts-per-token override (4-Expert transformation in miniature)", "[forward][fixtures]") {
  for (const char* name : {"tiny-a", "tiny-b"}) {
    auto f = open_fixture(name);
    if (!f) {
      WARN("fixture missing: skipped");
      return;
    }
    const int k = f->meta["override"]["num_experts_per_tok"].get<int>();
    auto m = load(*f, k, /*torch_cpu_ties=*/true);
    REQUIRE(m->config().experts_per_token == k);
    for (int i : f->meta["override"]["prompts"].get<std::vector<int>>()) {
      const auto ids = f->ids(fmt::format("prompt{}.input_ids", i));
      const auto want = f->f32(fmt::format("override.prompt{}.logits", i));
      const RunResult full = run(*m, ids, {});
      CHECK(compare(full.logits, want, m->config().vocab_size, fmt::format("{} override prompt{}", name, i)) <= kTol);
      const RunResult chunked = run(*m, ids, {5, 1});
      CHECK(compare(chunked.logits, want, m->config().vocab_size, fmt::format("{} override prompt{} chunked", name, i),
                    comparable_rows(full, chunked, static_cast<int64_t>(ids.size()))) <= kTol);
    }
  }
}

TEST_CASE("greedy continuation reproduced by generate()", "[forward][fixtures][generate]") {
  for (const char* name : {"tiny-a", "tiny-b"}) {
    auto f = open_fixture(name);
    if (!f) {
      WARN("fixture missing: skipped");
      return;
    }
    auto m = load(*f, 0, /*torch_cpu_ties=*/true);
    const auto prompt = f->ids("greedy.prompt");
    const auto want = f->ids("greedy.tokens");
    dsv4::GenerateParams gp;
    gp.max_new_tokens = static_cast<int>(want.size());
    gp.sampler.temperature = 0.0f;
    gp.stop_on_eos = false;
    auto s = m->create_session();
    const auto r = dsv4::generate(*s, nullptr, prompt, gp);
    INFO(name);
    CHECK(r.tokens == want);
    CHECK(r.reason == dsv4::StopReason::max_tokens);
  }
}

TEST_CASE("dsv4 generate --temperature 0 --ids-only reproduces greedy.tokens", "[forward][fixtures][cli]") {
  NEED_FIXTURE(f, "tiny-a");
  const auto prompt = f->ids("greedy.prompt");
  const auto want = f->ids("greedy.tokens");
  std::string ids, expect;
  for (size_t i = 0; i < prompt.size(); ++i) ids += (i ? "," : "") + std::to_string(prompt[i]);
  for (size_t i = 0; i < want.size(); ++i) expect += (i ? "," : "") + std::to_string(want[i]);
  const std::string out = (fs::temp_directory_path() / "dsv4_greedy_cli.txt").string();
  const std::string cmd = fmt::format("DSV4_LOG_LEVEL=warn '{}' generate --model '{}/model' --prompt-ids {} --temperature 0 "
                                      "--max-new-tokens {} --ids-only --ignore-eos --indexer-ties torch-cpu > '{}'",
                                      DSV4_CLI_PATH, f->dir, ids, want.size(), out);
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  std::string line;
  std::getline(in, line);
  CHECK(line == expect);
  fs::remove(out);
}

TEST_CASE("dsv4 eval-logits writes prompt{i}.logits in a chunk schedule", "[forward][fixtures][cli]") {
  NEED_FIXTURE(f, "tiny-a");
  const std::string out = (fs::temp_directory_path() / "dsv4_eval_logits.safetensors").string();
  const std::string cmd = fmt::format("DSV4_LOG_LEVEL=warn '{}' eval-logits --model '{}/model' --input '{}/reference.safetensors' "
                                      "--out '{}' --indexer-ties torch-cpu",
                                      DSV4_CLI_PATH, f->dir, f->dir, out);
  REQUIRE(std::system(cmd.c_str()) == 0);
  dsv4::SafetensorsFile got(out);
  for (int i = 0; i < f->prompts(); ++i) {
    const auto name = fmt::format("prompt{}.logits", i);
    REQUIRE(got.get(name).shape == f->ref->get(name).shape);
    CHECK(compare(dsv4::to_f32(got.get(name)), f->f32(name), 1024, "eval-logits " + name) <= kTol);
  }
  fs::remove(out);
}

TEST_CASE("hidden states layer by layer", "[forward][fixtures]") {
  // The first layer whose input streams diverge names the culprit when logits do not match.
  for (const char* name : {"tiny-a", "tiny-b"}) {
    auto f = open_fixture(name);
    if (!f) {
      WARN("fixture missing: skipped");
      return;
    }
    auto m = load(*f, 0, /*torch_cpu_ties=*/true);
    const auto& cfg = m->config();
    const auto& hs = f->meta["hidden_states"];
    const int p = hs["prompt"].get<int>();
    const int64_t n = hs["positions"].get<int64_t>();
    const auto all = f->ids(fmt::format("prompt{}.input_ids", p));
    const std::vector<int32_t> ids(all.begin(), all.begin() + n);
    auto s = m->create_session();
    std::vector<float> hidden, logits;
    dsv4::ForwardChunk c;
    c.seq = s->handle();
    c.tokens = ids;
    c.logits = dsv4::LogitsMode::none;
    c.logits_out = &logits;
    c.hidden_out = &hidden;
    // The dumps come from prompt p's full forward: score rows of its length.
    const dsv4::cpu::OracleChunk extra{static_cast<int64_t>(all.size()), nullptr};
    REQUIRE(dynamic_cast<dsv4::cpu::CpuBackend&>(m->backend()).forward_oracle({&c, 1}, {&extra, 1}).ok());
    const int64_t block = n * cfg.hc_mult * cfg.hidden_size;
    REQUIRE(hidden.size() == static_cast<size_t>(cfg.num_layers * block + n * cfg.hidden_size));
    for (int l = 0; l <= cfg.num_layers; ++l) {
      const auto want = f->f32(fmt::format("prompt{}.hidden_states.{}", p, l));
      const size_t len = l < cfg.num_layers ? static_cast<size_t>(block) : static_cast<size_t>(n * cfg.hidden_size);
      REQUIRE(want.size() == len);
      double mx = 0, scale = 0;
      for (size_t i = 0; i < len; ++i) {
        mx = std::max(mx, std::fabs(static_cast<double>(hidden[l * block + i]) - want[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
      }
      std::printf("  %s hidden_states.%d max|d| = %.3g (max |ref| %.3g)\n", name, l, mx, scale);
      INFO(name << " layer " << l);
      // Relative to the state's magnitude: f32 through the stack vs the f64 oracle.
      CHECK(mx <= 1e-4 * std::max(1.0, scale));
    }
  }
}
