// Hostile-input regressions for the tokenizer (issue 15): deeply nested pipeline sections, ids that
// would size the tables far beyond the file, post-processor ids outside the vocabulary, a too-deep
// tokenizer_config.json, long whitespace runs (valid text must always encode, with the ids
// Hugging Face `tokenizers` gives), and `dsv4 tokenize --decode-jsonl` with ids wider than 32 bits.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

using dsv4::Status;
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
  } catch (const dsv4::Error& e) {
    return {e.status(), e.what()};
  }
  return {};
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string tiny_json(const std::string& vocab_extra = "", const std::string& added = "[]",
                      const std::string& pre = R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})",
                      const std::string& post = "null", const std::string& decoder = R"({"type":"ByteLevel"})") {
  return R"({"version":"1.0","added_tokens":)" + added + R"(,"normalizer":null,"pre_tokenizer":)" + pre +
         R"(,"post_processor":)" + post + R"(,"decoder":)" + decoder +
         R"(,"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"ab":3)" + vocab_extra + R"(},"merges":["a b"]}})";
}

// `open` × n + middle + `close` × n.
std::string nest(const std::string& open, const std::string& middle, const std::string& close, size_t n) {
  std::string s;
  s.reserve(n * (open.size() + close.size()) + middle.size());
  for (size_t i = 0; i < n; ++i) s += open;
  s += middle;
  for (size_t i = 0; i < n; ++i) s += close;
  return s;
}

const dsv4::Tokenizer& real() {
  static const dsv4::Tokenizer t = dsv4::Tokenizer::from_file(dsv4_test::source_dir() + "/data/tokenizer/tokenizer.json");
  return t;
}

// Run-length form of an id list: (id, count) pairs.
std::vector<std::pair<int32_t, size_t>> rle(const std::vector<int32_t>& ids) {
  std::vector<std::pair<int32_t, size_t>> out;
  for (int32_t id : ids) {
    if (!out.empty() && out.back().first == id) ++out.back().second;
    else out.push_back({id, 1});
  }
  return out;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("dsv4-robust-tok-" + tag + "-" + std::to_string(::getpid()));
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

}  // namespace

TEST_CASE("robustness: tokenizer.json sections nested 200,000 deep are a format error, not a stack overflow",
          "[robustness][tokenizer]") {
  constexpr size_t kDeep = 200000;
  SECTION("pre_tokenizer") {
    const std::string pre = nest(R"({"type":"Sequence","pretokenizers":[)", R"({"type":"ByteLevel"})", "]}", kDeep);
    const Outcome o = outcome_of([&] { dsv4::Tokenizer::from_json(tiny_json("", "[]", pre), "deep-pre.json"); });
    CHECK(o.status == Status::format);
    CHECK(has(o.message, "deep-pre.json"));
    CHECK(has(o.message, "nested deeper than 64"));
  }
  SECTION("decoder") {
    const std::string dec = nest(R"({"type":"Sequence","decoders":[)", R"({"type":"ByteLevel"})", "]}", kDeep);
    const Outcome o = outcome_of([&] {
      dsv4::Tokenizer::from_json(tiny_json("", "[]", R"({"type":"ByteLevel"})", "null", dec), "deep-dec.json");
    });
    CHECK(o.status == Status::format);
    CHECK(has(o.message, "nested deeper than 64"));
  }
  SECTION("post_processor (and a plain deep value anywhere)") {
    const std::string post = nest(R"({"type":"Sequence","processors":[)", R"({"type":"ByteLevel"})", "]}", kDeep);
    const Outcome o = outcome_of([&] {
      dsv4::Tokenizer::from_json(tiny_json("", "[]", R"({"type":"ByteLevel"})", post), "deep-post.json");
    });
    CHECK(o.status == Status::format);
    const std::string junk = R"({"junk":)" + nest("[", "1", "]", kDeep) + "," + tiny_json().substr(1);
    CHECK(outcome_of([&] { dsv4::Tokenizer::from_json(junk, "junk.json"); }).status == Status::format);
  }
  SECTION("the same file through from_file (as `dsv4 generate` and Python Model load it)") {
    TempDir d("deep");
    write_file(d.path / "tokenizer.json",
               tiny_json("", "[]", nest(R"({"type":"Sequence","pretokenizers":[)", R"({"type":"ByteLevel"})", "]}", kDeep)));
    const Outcome o = outcome_of([&] { dsv4::Tokenizer::from_file((d.path / "tokenizer.json").string()); });
    CHECK(o.status == Status::format);
    CHECK(has(o.message, (d.path / "tokenizer.json").string()));
  }
  SECTION("moderate nesting still loads") {
    const std::string pre = nest(R"({"type":"Sequence","pretokenizers":[)", R"({"type":"ByteLevel"})", "]}", 20);
    const dsv4::Tokenizer t = dsv4::Tokenizer::from_json(tiny_json("", "[]", pre), "ok.json");
    CHECK(t.encode("ab") == std::vector<int32_t>{3});
  }
}

TEST_CASE("robustness: ids far beyond the number of tokens are rejected before tables are sized by them",
          "[robustness][tokenizer]") {
  // 2^26 would have sized ~2.4 GB of id tables from a file of a few hundred bytes.
  Outcome o = outcome_of([&] { dsv4::Tokenizer::from_json(tiny_json(R"(,"z":67108864)"), "big-id.json"); });
  CHECK(o.status == Status::format);
  CHECK(has(o.message, "big-id.json"));
  CHECK(has(o.message, "67108864"));
  CHECK(has(o.message, "model.vocab[\"z\"]"));
  o = outcome_of([&] {
    dsv4::Tokenizer::from_json(
        tiny_json("", R"([{"id":67108864,"content":"<x>","special":true}])"), "big-added.json");
  });
  CHECK(o.status == Status::format);
  CHECK(has(o.message, "added_tokens[0]"));
  // Holes are fine up to the bound (2 × tokens + 1024): 5 tokens, largest id 1033.
  const dsv4::Tokenizer t = dsv4::Tokenizer::from_json(
      tiny_json("", R"([{"id":1033,"content":"<x>","special":true}])"), "holes.json");
  CHECK(t.vocab_size() == 1034);
  CHECK(t.encode("ab<x>") == std::vector<int32_t>{3, 1033});
  CHECK(outcome_of([&] {
          dsv4::Tokenizer::from_json(tiny_json("", R"([{"id":1034,"content":"<x>","special":true}])"), "h.json");
        }).status == Status::format);
}

TEST_CASE("robustness: post-processor ids must be ids of the vocabulary", "[robustness][tokenizer]") {
  const std::string added = R"([{"id":4,"content":"<s>","special":true}])";
  const std::string vocab;
  auto with_post = [&](const std::string& post) {
    return outcome_of([&] { dsv4::Tokenizer::from_json(tiny_json(vocab, added, R"({"type":"ByteLevel"})", post), "post.json"); });
  };
  const std::string tmpl = R"({"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}],)"
                           R"("special_tokens":{"<s>":{"ids":[IDS]}}})";
  auto tmpl_with = [&](const std::string& ids) {
    std::string s = tmpl;
    s.replace(s.find("IDS"), 3, ids);
    return s;
  };
  CHECK(with_post(tmpl_with("4")).status == Status::ok);
  for (const char* bad : {"99999", "-1", "4294967300", "1.5", "\"4\""}) {
    INFO(bad);
    const Outcome o = with_post(tmpl_with(bad));
    CHECK(o.status == Status::format);
    CHECK(has(o.message, "post_processor.special_tokens.<s>.ids"));
  }
  CHECK(with_post(R"({"type":"RobertaProcessing","cls":["<s>",4],"sep":["<s>",1099511627776]})").status == Status::format);
  CHECK(with_post(R"({"type":"BertProcessing","cls":["<s>",4],"sep":["<s>",4]})").status == Status::ok);
}

TEST_CASE("robustness: a tokenizer_config.json nested too deep is ignored like a malformed one", "[robustness][tokenizer]") {
  TempDir d("cfg");
  write_file(d.path / "tokenizer.json", tiny_json("", R"([{"id":4,"content":"</s>","special":true}])"));
  write_file(d.path / "tokenizer_config.json", R"({"eos_token":)" + nest("[", "\"ab\"", "]", 100000) + "}");
  const dsv4::Tokenizer t = dsv4::Tokenizer::from_file((d.path / "tokenizer.json").string());
  CHECK(t.eos_id() == 4);  // the conventional name, as without a config
}

TEST_CASE("robustness: long whitespace runs encode, with the ids of Hugging Face tokenizers", "[robustness][tokenizer]") {
  const dsv4::Tokenizer& t = real();
  // Goldens from tokenizers 0.23.3 (Oniguruma) in run-length form. tokenizers itself panics
  // ("retry-limit-in-match over") from about 10 M spaces on; the rule it follows below that limit
  // continues linearly: runs of 128 spaces (id 69933), of 16 newlines (id 93614).
  using R = std::vector<std::pair<int32_t, size_t>>;
  CHECK(rle(t.encode(std::string(1000000, ' '))) == R{{69933, 7812}, {16932, 1}});
  CHECK(rle(t.encode(std::string(1000000, ' ') + "a")) == R{{69933, 7812}, {105162, 1}, {260, 1}});
  CHECK(rle(t.encode(std::string(1000000, '\n'))) == R{{93614, 62500}});
  {
    std::string s;
    for (int i = 0; i < 500000; ++i) s += " \t";
    CHECK(rle(t.encode(s + "x")) == R{{223, 1}, {35749, 499999}, {51669, 1}});
  }
  {
    std::string nbsp;
    for (int i = 0; i < 100000; ++i) nbsp += "\u00a0";
    CHECK(rle(t.encode(nbsp + "b")) == R{{76890, 6249}, {23687, 1}, {56022, 1}, {2162, 1}, {68, 1}});
    std::string ideo;
    for (int i = 0; i < 200000; ++i) ideo += "\u3000";
    CHECK(rle(t.encode(ideo)) == R{{36759, 100000}});
  }
  {
    std::string s;
    for (int i = 0; i < 300; ++i) s += std::string(1000, ' ') + "\n\t";
    const R period{{69933, 7}, {16932, 1}, {3788, 1}, {9970, 1}, {200, 1}};
    R want;
    for (int i = 0; i < 300; ++i) want.insert(want.end(), period.begin(), period.end());
    want.back() = {55655, 1};  // the last tab joins "end"
    CHECK(rle(t.encode(s + "end")) == want);
  }
  // The campaign's input: 10 M spaces used to fail with "match limit exceeded" (PCRE2's fixed
  // budget of 10 M backtracking steps per match); the budget now grows with the text.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(rle(t.encode(std::string(10000000, ' '))) == R{{69933, 78125}});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("10 M spaces encoded in " << secs << " s");
}

TEST_CASE("robustness: dsv4 tokenize --decode-jsonl rejects ids wider than 32 bits", "[robustness][tokenizer][cli]") {
  TempDir d("cli");
  auto run = [&](const std::string& jsonl) {
    write_file(d.path / "in.jsonl", jsonl);
    const std::string cmd = "'" + std::string(DSV4_CLI_PATH) + "' tokenize --tokenizer '" + dsv4_test::source_dir() +
                            "/data/tokenizer/tokenizer.json' --decode-jsonl '" + (d.path / "in.jsonl").string() + "' >'" +
                            (d.path / "out").string() + "' 2>'" + (d.path / "err").string() + "'";
    const int st = std::system(cmd.c_str());
    std::ifstream o(d.path / "out"), e(d.path / "err");
    std::string out((std::istreambuf_iterator<char>(o)), {}), err((std::istreambuf_iterator<char>(e)), {});
    return std::tuple{WIFEXITED(st) ? WEXITSTATUS(st) : -1, out, err};
  };
  {
    auto [code, out, err] = run("{\"ids\": [19923]}\n");
    CHECK(code == 0);
    CHECK(out == "{\"text\":\"Hello\"}\n");
  }
  // 4294986219 = 2^32 + 19923 used to decode as 19923.
  for (const char* bad : {"4294986219", "-4294947373", "18446744073709551615", "2147483648"}) {
    INFO(bad);
    auto [code, out, err] = run(std::string("{\"ids\": [1, ") + bad + "]}\n");
    CHECK(code != 0);
    CHECK(out.empty());
    CHECK(has(err, "in.jsonl:1"));
    CHECK(has(err, std::string("\"ids\"[1] = ") + bad));
  }
  auto [code, out, err] = run("{\"ids\": " + nest("[", "1", "]", 100000) + "}\n");
  CHECK(code != 0);
  CHECK(has(err, "nested deeper than 64"));
}
