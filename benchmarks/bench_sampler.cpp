// Sampler cost per draw on one core at the DeepSeek-V4 vocabulary (129,280): greedy, the default
// settings, the usual filters and their combination, penalties over a 2k-token history, logprobs.
// Logits are random normal (seeded), so the kept sets of top-p are much wider than a real model's
// (thousands of tokens: a worst case for top-p's candidates, not a typical one). --rows rows are cycled (8 × 0.5 MB by
// default, read from the caches; 64 rows go past a 32 MB L3, so each draw reads its row from
// memory). Prints a table (µs/draw as the median of --runs timed draws, the fastest one, ratio of the
// medians to greedy) and the result line "default/greedy ratio"; --json writes the same numbers.
// --only keeps greedy and the settings whose name contains the text. No assertion on time.
//   bench_sampler [--vocab 129280] [--sigma 2.5] [--rows 8] [--runs 301] [--only TEXT] [--json out.json]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "dsv4/error.hpp"
#include "dsv4/sampler.hpp"

namespace {

struct Setting {
  std::string name;
  dsv4::SamplerParams params;
  bool history = false;  // 2k seen + generated tokens in the state
};

std::vector<Setting> settings() {
  std::vector<Setting> out;
  auto add = [&](std::string name, auto edit, bool history = false) {
    dsv4::SamplerParams p;
    p.seed = 1234;
    edit(p);
    out.push_back({std::move(name), p, history});
  };
  add("greedy", [](auto& p) { p.temperature = 0.0f; });
  add("default (T=1, top_p=1)", [](auto&) {});
  add("T=0.7 top_p=0.9", [](auto& p) { p.temperature = 0.7f, p.top_p = 0.9f; });
  add("T=1 top_p=0.95", [](auto& p) { p.top_p = 0.95f; });
  add("T=0.7 min_p=0.05 top_p=0.9", [](auto& p) { p.temperature = 0.7f, p.min_p = 0.05f, p.top_p = 0.9f; });
  add("top_k=50", [](auto& p) { p.top_k = 50; });
  add("min_p=0.05", [](auto& p) { p.min_p = 0.05f; });
  add("T=0.8 top_k=40 top_p=0.95", [](auto& p) { p.temperature = 0.8f, p.top_k = 40, p.top_p = 0.95f; });
  add("penalties (freq 0.5 pres 0.5 rep 1.1, 2k seen)",
      [](auto& p) { p.frequency_penalty = 0.5f, p.presence_penalty = 0.5f, p.repetition_penalty = 1.1f; }, true);
  add("logprobs=5", [](auto& p) { p.logprobs = 5; });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int vocab = 129280, runs = 301, n_rows = 8;
  double sigma = 2.5;
  std::string json_out, only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--vocab") vocab = std::max(1, std::stoi(next()));
    else if (a == "--sigma") sigma = std::stod(next());
    else if (a == "--runs") runs = std::max(1, std::stoi(next()));
    else if (a == "--rows") n_rows = std::max(1, std::stoi(next()));
    else if (a == "--json") json_out = next();
    else if (a == "--only") only = next();
    else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  try {
    // A few different rows, cycled, so that no single lucky row decides the numbers.
    std::mt19937 gen(20240611);
    std::normal_distribution<float> normal(0.0f, static_cast<float>(sigma));
    std::vector<std::vector<float>> rows(static_cast<size_t>(n_rows), std::vector<float>(static_cast<size_t>(vocab)));
    for (auto& r : rows)
      for (auto& x : r) x = normal(gen);
    std::uniform_int_distribution<int32_t> any_token(0, vocab - 1);
    std::vector<int32_t> history(2048);
    for (auto& t : history) t = any_token(gen);

    fmt::print("sampler, vocab {}, logits N(0, {}), {} rows cycled, median of {} draws, one thread\n", vocab, sigma,
               n_rows, runs);
    fmt::print("{:<48} {:>12} {:>10} {:>10}\n", "setting", "us/draw", "fastest", "x greedy");
    nlohmann::json results = nlohmann::json::array();
    double greedy_us = 0, default_us = 0;
    uint64_t checksum = 0;  // keeps the draws observable
    for (const Setting& s : settings()) {
      if (!only.empty() && s.name != "greedy" && s.name.find(only) == std::string::npos) continue;
      dsv4::Sampler sampler(s.params);
      dsv4::SamplerState base(s.params.seed);
      if (s.history) {
        // Half prompt, half generated: the repetition penalty sees all 2k, frequency / presence 1k.
        base.add_prompt(std::span<const int32_t>(history).first(history.size() / 2));
        for (size_t i = history.size() / 2; i < history.size(); ++i) base.add_generated(history[i]);
      }
      std::vector<double> us;
      us.reserve(static_cast<size_t>(runs));
      for (int r = -8; r < runs; ++r) {  // 8 warm-up draws grow the work buffers
        // A fresh copy each draw keeps the history at 2k; the copy is outside the timed region.
        dsv4::SamplerState state = base;
        state.rng += static_cast<uint64_t>(r + 8);
        const auto& row = rows[static_cast<size_t>((r + 8) % n_rows)];
        const auto t0 = std::chrono::steady_clock::now();
        const dsv4::SampleResult res = sampler.sample(row, state);
        const auto t1 = std::chrono::steady_clock::now();
        checksum = checksum * 31 + static_cast<uint64_t>(res.id);
        if (r >= 0) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
      std::sort(us.begin(), us.end());
      const double median = us[us.size() / 2], fastest = us.front();
      if (s.name == "greedy") greedy_us = median;
      if (s.name.rfind("default", 0) == 0) default_us = median;
      const double ratio = greedy_us > 0 ? median / greedy_us : 0.0;
      fmt::print("{:<48} {:>12.1f} {:>10.1f} {:>10.2f}\n", s.name, median, fastest, ratio);
      results.push_back(
          {{"setting", s.name}, {"us_per_draw", median}, {"fastest_us", fastest}, {"ratio_to_greedy", ratio}});
    }
    const double ratio = default_us > 0 ? default_us / greedy_us : 0.0;
    if (default_us > 0)
      fmt::print("default/greedy ratio {:.2f} (target ≤ 3), greedy {:.1f} us, default {:.1f} us\n", ratio, greedy_us,
                 default_us);
    fmt::print("checksum of the draws {:016x}\n", checksum);
    if (!json_out.empty()) {
      const nlohmann::json doc = {{"benchmark", "sampler"}, {"vocab", vocab},
                                  {"sigma", sigma},         {"rows", n_rows},
                                  {"runs", runs},           {"results", results},
                                  {"greedy_us", greedy_us}, {"default_us", default_us},
                                  {"default_greedy_ratio", ratio}};
      std::ofstream(json_out) << doc.dump(2) << "\n";
      fmt::print("wrote {}\n", json_out);
    }
  } catch (const dsv4::Error& e) {
    fmt::print(stderr, "bench_sampler: {}\n", e.what());
    return 1;
  }
  return 0;
}
