// Scheduler overhead per step: the continuous-batching loop (include/dsv4/scheduler.hpp) over the
// "null" backend, which does no model computation, at Flash's config (vocab 129,280, 43 layers
// of state accounting). Every step decodes one token for each of B running requests; the table
// gives µs per step and per token — the host cost a real backend's step must hide (a batch-1
// decode step of the model is ~2.2 ms at the HBM floor on an H200, docs/performance.md).
//   bench_scheduler [--batches 1,32,256] [--tokens 256] [--prompt 64] [--json out.json]
// Two variants per batch: greedy with stop strings off (the bare loop) and with a streaming
// callback + the tokenizer's text decoding and two stop strings (what a server runs).
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "dsv4/engine.hpp"
#include "dsv4/model_gen.hpp"
#include "dsv4/scheduler.hpp"
#include "dsv4/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {
std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  std::string cur;
  for (const char* p = s;; ++p) {
    if (*p == ',' || !*p) {
      if (!cur.empty()) v.push_back(std::stoi(cur));
      cur.clear();
      if (!*p) break;
    } else {
      cur += *p;
    }
  }
  return v;
}

struct Row {
  int batch;
  std::string variant;
  double us_per_step, us_per_token, tokens_per_s;
  int64_t steps;
};
}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches = {1, 32, 256};
  int tokens = 256, prompt_len = 64;
  std::string json_out;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batches") && i + 1 < argc) batches = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--prompt") && i + 1 < argc) prompt_len = std::stoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_out = argv[++i];
    else {
      fmt::print(stderr, "usage: bench_scheduler [--batches 1,32,256] [--tokens N] [--prompt N] [--json F]\n");
      return 2;
    }
  }
  // A model folder with only config.json (+ the tokenizer): the null backend reads nothing else.
  const fs::path dir = fs::temp_directory_path() / fmt::format("dsv4-bench-scheduler-{}", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << dsv4::preset_config("flash").to_json().dump(2);
  const fs::path tok_src = fs::path(DSV4_BENCH_SOURCE_DIR) / "data/tokenizer/tokenizer.json";
  const bool have_tok = fs::exists(tok_src);
  if (have_tok) fs::copy_file(tok_src, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  dsv4::LoadOptions lo;
  lo.backend = "null";
  auto model = dsv4::Model::load(dir.string(), lo, dsv4::Logger(dsv4::LogLevel::warn));
  const int V = model->config().vocab_size;

  std::vector<Row> rows;
  fmt::print("scheduler overhead per step, null backend, Flash config (vocab {}), {} decode tokens per request\n", V,
             tokens);
  fmt::print("{:>6} {:<22} {:>12} {:>14} {:>14} {:>8}\n", "batch", "variant", "us/step", "us/token", "tokens/s", "steps");
  for (int B : batches)
    for (int variant = 0; variant < (have_tok ? 2 : 1); ++variant) {
      dsv4::SchedulerOptions so;
      so.max_num_seqs = B;
      so.max_num_batched_tokens = std::max(2048, B * prompt_len);
      dsv4::Scheduler sched(model->backend(), variant ? model->tokenizer() : nullptr, so);
      std::mt19937 g(1);
      size_t streamed = 0;
      for (int i = 0; i < B; ++i) {
        dsv4::Request r;
        r.prompt.resize(static_cast<size_t>(prompt_len));
        for (auto& t : r.prompt) t = static_cast<int32_t>(g() % static_cast<uint32_t>(V));
        r.params.sampling.temperature = 0.0f;
        r.params.stop.max_tokens = tokens;
        r.params.stop.stop_on_eos = false;
        if (variant) {
          r.params.stop.stop_strings = {"<|never-appears-1|>", "<|never-appears-2|>"};
          r.on_event = [&](const dsv4::RequestEvent& e) { streamed += e.piece.size(); };
        }
        sched.submit(std::move(r));
      }
      sched.step();  // the prefill step (all prompts in one)
      const int64_t steps0 = sched.stats().steps;
      const auto t0 = std::chrono::steady_clock::now();
      sched.run_until_idle();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const int64_t steps = sched.stats().steps - steps0;
      const double toks = static_cast<double>(B) * (tokens - 1);
      Row row{B, variant ? "stream+text+stops" : "bare", 1e6 * secs / static_cast<double>(steps), 1e6 * secs / toks,
              toks / secs, steps};
      rows.push_back(row);
      fmt::print("{:>6} {:<22} {:>12.2f} {:>14.3f} {:>14.0f} {:>8}\n", row.batch, row.variant, row.us_per_step,
                 row.us_per_token, row.tokens_per_s, row.steps);
      (void)streamed;
    }
  if (!json_out.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const Row& r : rows)
      j.push_back({{"batch", r.batch}, {"variant", r.variant}, {"us_per_step", r.us_per_step},
                   {"us_per_token", r.us_per_token}, {"tokens_per_s", r.tokens_per_s}, {"steps", r.steps}});
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
