// Tokenizer encode throughput, single thread: libdsv4 against Hugging Face `tokenizers` on the same
// corpus in one run (the Python side is benchmarks/bench_tokenizer_hf.py, started with one thread).
// Prints a table (MB/s, tokens/s, ratio) and checks that both produced the same ids; --json writes it.
//   bench_tokenizer [--tokenizer data/tokenizer/tokenizer.json] [--text FILE] [--mb 4] [--runs 5]
//                   [--python python3] [--no-hf] [--json out.json]
// Default corpus (run from the repository root): the texts of ../shared/data/tokenizer-cases.jsonl
// (code, prose, CJK, emoji, whitespace / digit edge cases), ../shared/spec/*.md and this repository's
// C++ sources, concatenated in a fixed order and repeated up to --mb megabytes.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string default_corpus(double mb) {
  std::string base;
  const fs::path cases = "../shared/data/tokenizer-cases.jsonl";
  if (fs::exists(cases)) {
    std::ifstream in(cases);
    std::string line;
    while (std::getline(in, line)) base += nlohmann::json::parse(line).at("text").get<std::string>() + "\n";
  }
  std::vector<fs::path> files;
  for (const char* f : {"../shared/spec/dsv4-architecture.md", "../shared/spec/dsv4-chat-format.md"})
    if (fs::exists(f)) files.emplace_back(f);
  for (const char* dir : {"include", "lib", "examples"}) {
    if (!fs::exists(dir)) continue;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      const auto ext = e.path().extension();
      if (e.is_regular_file() && (ext == ".cpp" || ext == ".hpp" || ext == ".cu" || ext == ".h")) files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) base += read_file(f);
  if (base.empty()) dsv4::fail(dsv4::Status::io, "no corpus found: run from the repository root or pass --text");
  std::string out;
  const size_t target = static_cast<size_t>(mb * 1e6);
  while (out.size() < target) out += base;
  return out;
}

uint64_t fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t i : ids) h = (h ^ static_cast<uint32_t>(i)) * 0x100000001b3ull;
  return h;
}

struct Row {
  std::string engine;
  double seconds = 0, mb_s = 0, tok_s = 0;
  size_t tokens = 0;
  uint64_t digest = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::string tok_path = "data/tokenizer/tokenizer.json", text_path, python = "python3", json_out;
  double mb = 4;
  int runs = 5;
  bool hf = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokenizer") tok_path = next();
    else if (a == "--text") text_path = next();
    else if (a == "--mb") mb = std::stod(next());
    else if (a == "--runs") runs = std::max(1, std::stoi(next()));
    else if (a == "--python") python = next();
    else if (a == "--json") json_out = next();
    else if (a == "--no-hf") hf = false;
    else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  try {
    std::string text = text_path.empty() ? default_corpus(mb) : read_file(text_path);
    // Both engines read the very same bytes.
    const fs::path corpus = fs::temp_directory_path() / fmt::format("dsv4_bench_tokenizer_{}.txt", ::getpid());
    { std::ofstream(corpus, std::ios::binary) << text; }

    auto t0 = std::chrono::steady_clock::now();
    const dsv4::Tokenizer tk = dsv4::Tokenizer::from_file(tok_path);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Documents: the corpus cut after the first newline past every 4 KB (how a server or a data
    // pipeline sees text); both engines get the same list.
    std::vector<std::string> docs;
    for (size_t pos = 0; pos < text.size();) {
      size_t cut = text.find('\n', std::min(text.size(), pos + 4096));
      cut = cut == std::string::npos ? text.size() : cut + 1;
      docs.push_back(text.substr(pos, cut - pos));
      pos = cut;
    }
    const fs::path docs_path = fs::temp_directory_path() / fmt::format("dsv4_bench_tokenizer_{}.jsonl", ::getpid());
    {
      std::ofstream out(docs_path, std::ios::binary);
      for (const auto& d : docs) out << nlohmann::json{{"text", d}}.dump() << "\n";
    }

    auto measure = [&](const char* mode, auto&& fn) {
      std::vector<double> times;
      std::vector<int32_t> ids;
      for (int r = 0; r < runs; ++r) {
        const auto s = std::chrono::steady_clock::now();
        ids = fn();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
      }
      std::sort(times.begin(), times.end());
      Row row{fmt::format("libdsv4 ({})", mode), times[times.size() / 2], 0, 0, ids.size(), fnv1a(ids)};
      row.mb_s = text.size() / row.seconds / 1e6;
      row.tok_s = ids.size() / row.seconds;
      return row;
    };
    std::vector<Row> rows;
    rows.push_back(measure("whole", [&] { return tk.encode(text); }));
    rows.push_back(measure("docs", [&] {
      std::vector<int32_t> all;
      for (const auto& d : docs) {
        const auto ids = tk.encode(d);
        all.insert(all.end(), ids.begin(), ids.end());
      }
      return all;
    }));

    std::string hf_note;
    if (hf) {
      const std::string cmd = fmt::format("RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false {} benchmarks/bench_tokenizer_hf.py "
                                          "--tokenizer '{}' --text '{}' --docs '{}' --runs {} 2>&1",
                                          python, tok_path, corpus.string(), docs_path.string(), runs);
      std::string out;
      if (FILE* p = popen(cmd.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
        pclose(p);
      }
      const auto j = nlohmann::json::parse(out, nullptr, false);
      if (j.is_object() && j.contains("whole")) {
        for (const char* mode : {"whole", "docs"}) {
          const auto& m = j[mode];
          rows.push_back({fmt::format("{} ({})", j["engine"].get<std::string>(), mode), m["seconds"].get<double>(),
                          m["mb_s"].get<double>(), m["tok_s"].get<double>(), m["tokens"].get<size_t>(),
                          m["digest"].get<uint64_t>()});
        }
      } else {
        hf_note = fmt::format("Hugging Face side unavailable: {}", out.empty() ? cmd : out);
      }
    }
    std::filesystem::remove(corpus);
    std::filesystem::remove(docs_path);

    fmt::print("corpus {:.2f} MB ({}), tokenizer {} (load {:.2f} s), median of {} runs, 1 thread\n\n",
               text.size() / 1e6, text_path.empty() ? "default mixed corpus" : text_path, tok_path, load_s, runs);
    fmt::print("{} documents (cut at the first newline after 4 KB)\n\n", docs.size());
    fmt::print("{:<30} {:>10} {:>14} {:>12} {:>10}\n", "engine (mode)", "MB/s", "tokens/s", "tokens", "seconds");
    for (const Row& r : rows)
      fmt::print("{:<30} {:>10.2f} {:>14.0f} {:>12} {:>10.4f}\n", r.engine, r.mb_s, r.tok_s, r.tokens, r.seconds);
    nlohmann::json report = {{"bytes", text.size()}, {"documents", docs.size()}, {"runs", runs}, {"tokenizer", tok_path}};
    for (const Row& r : rows)
      report["engines"].push_back({{"engine", r.engine}, {"mb_s", r.mb_s}, {"tok_s", r.tok_s}, {"tokens", r.tokens}});
    if (rows.size() == 4) {
      fmt::print("\n");
      for (int m = 0; m < 2; ++m) {
        const Row &o = rows[m], &h = rows[m + 2];
        const bool same = o.digest == h.digest && o.tokens == h.tokens;
        const char* mode = m == 0 ? "whole" : "docs";
        fmt::print("ratio libdsv4 / tokenizers ({}): {:.2f}x   ids identical: {}\n", mode, o.mb_s / h.mb_s, same ? "yes" : "NO");
        report[fmt::format("ratio_{}", mode)] = o.mb_s / h.mb_s;
        report[fmt::format("ids_identical_{}", mode)] = same;
      }
    }
    if (!hf_note.empty()) fmt::print("\n{}\n", hf_note);
    if (!json_out.empty()) std::ofstream(json_out) << report.dump(2) << "\n";
  } catch (const dsv4::Error& e) {
    fmt::print(stderr, "bench_tokenizer: {}\n", e.what());
    return 1;
  }
  return 0;
}
