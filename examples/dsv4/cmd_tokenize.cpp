// `dsv4 tokenize`: encode text (--text, or --jsonl with one {"text": ...} object per line, writing
// one {"ids": [...]} line per input, the form acceptance checks read) or decode ids (--decode, or
// --decode-jsonl with {"ids": [...]} lines, writing {"text": ...} lines).
// Bad input (unreadable file, malformed line, invalid UTF-8) is a dsv4::Error naming the line.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4::cli {
namespace {


// Calls fn(object, line number) for each non-blank line of a JSON-lines file; errors name the line.
template <typename F>
void for_each_json_line(const std::string& path, const char* flag, F&& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(Status::io, "cannot open {} file '{}'", flag, path);
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    // Depth-limited like every JSON the tools read (a line has no business nesting deeply).
    nlohmann::json j;
    try {
      j = parse_json_bounded(line, "line");
    } catch (const Error& e) {
      fail(Status::format, "{}:{}: not valid JSON: {}", path, lineno, e.what());
    }
    try {
      fn(j, lineno);
    } catch (const Error& e) {
      fail(e.status(), "{}:{}: {}", path, lineno, e.what());
    }
  }
  if (in.bad()) fail(Status::io, "error reading '{}'", path);
}

int encode_jsonl(const Tokenizer& tk, const std::string& path, bool add_special) {
  std::string out;
  for_each_json_line(path, "--jsonl", [&](const nlohmann::json& j, size_t) {
    if (!j.is_object() || !j.contains("text") || !j.at("text").is_string())
      fail(Status::format, "field \"text\" (a string) is missing");
    const std::vector<int32_t> ids = tk.encode(j.at("text").get_ref<const std::string&>(), add_special);
    out.clear();
    fmt::format_to(std::back_inserter(out), "{{\"ids\": [{}]}}\n", fmt::join(ids, ", "));
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
  return 0;
}

// Inverse of encode_jsonl: {"ids": [...]} per line → {"text": "..."} per line.
int decode_jsonl(const Tokenizer& tk, const std::string& path, bool skip_special) {
  for_each_json_line(path, "--decode-jsonl", [&](const nlohmann::json& j, size_t) {
    if (!j.is_object() || !j.contains("ids") || !j.at("ids").is_array())
      fail(Status::format, "expected an object with an \"ids\" array");
    std::vector<int32_t> ids;
    const auto& arr = j.at("ids");
    for (size_t i = 0; i < arr.size(); ++i) {
      const auto& v = arr[i];
      if (!v.is_number_integer()) fail(Status::format, "\"ids\"[{}] must be an integer, got {}", i, json_brief(v));
      // No silent narrowing: a wider value is not some other id modulo 2^32.
      if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(INT32_MAX)
                                 : (v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX))
        fail(Status::invalid_argument, "\"ids\"[{}] = {} is not a token id (0 .. {})", i, v.dump(),
             tk.vocab_size() - 1);
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    // Decoded text may hold U+FFFD but is always valid UTF-8, so dump() cannot throw.
    fmt::print("{}\n", nlohmann::json{{"text", tk.decode(ids, skip_special)}}.dump());
  });
  return 0;
}

}  // namespace

int cmd_tokenize(const Args& args) {
  Flags f(args, {"tokenizer", "text", "jsonl", "decode", "decode-jsonl"}, {"add-special", "skip-special"});
  if (!f.positional().empty()) fail(Status::invalid_argument, "unexpected argument '{}'", f.positional()[0]);
  const int modes = int(f.has("text")) + int(f.has("jsonl")) + int(f.has("decode")) + int(f.has("decode-jsonl"));
  if (modes != 1)
    fail(Status::invalid_argument,
         "usage: dsv4 tokenize --tokenizer F (--text T | --jsonl F | --decode 1,2,3 | --decode-jsonl F) [--add-special] "
         "[--skip-special]");
  const Tokenizer tk = Tokenizer::from_file(f.require("tokenizer"));
  const bool add_special = f.has("add-special");
  if (f.has("jsonl")) return encode_jsonl(tk, f.get("jsonl"), add_special);
  if (f.has("decode-jsonl")) return decode_jsonl(tk, f.get("decode-jsonl"), f.has("skip-special"));
  if (f.has("text")) {
    const std::vector<int32_t> ids = tk.encode(f.get("text"), add_special);
    fmt::print("{}\n", fmt::join(ids, ","));
    return 0;
  }
  const std::vector<int32_t> ids = f.get_id_list("decode");
  fmt::print("{}\n", tk.decode(ids, f.has("skip-special")));
  return 0;
}

}  // namespace dsv4::cli
