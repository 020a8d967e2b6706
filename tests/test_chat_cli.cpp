// Drives the built `dsv4` CLI (DSV4_CLI_PATH) on chat vectors: chat-template must print exactly
// the expected prompt (no added newline), invalid conversations exit 1 with the error on stderr,
// parse-completion prints the parsed message JSON (strict and --lenient) or exits 1.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "catch.hpp"
#include "dsv4/chat_format.hpp"

using dsv4::chat::Json;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) { return dsv4_test::read_file(p.string()); }
void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// A scratch directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("dsv4_chat_cli_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct Result {
  int code;
  std::string out, err;
};

// Runs the CLI with `args` (already shell-quoted), optional stdin file.
Result run_cli(const TempDir& dir, const std::string& args, const std::string& stdin_file = "") {
  const fs::path out = dir.path / "stdout", err = dir.path / "stderr";
  std::string cmd = "'" + std::string(DSV4_CLI_PATH) + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  if (!stdin_file.empty()) cmd += " <'" + stdin_file + "'";
  const int status = std::system(cmd.c_str());
  REQUIRE(status != -1);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
}

Json vector_file(const std::string& rel) {
  return Json::parse(read_file(dsv4_test::source_dir() + "/tests/data/chat-vectors/" + rel));
}

}  // namespace

TEST_CASE("chat cli: chat-template prints exactly the prompt", "[chat][cli]") {
  TempDir dir;
  for (const char* rel : {"official/O1-thinking-tools-toolcall-toolresult.json", "official/O4-chat-quick-instruction-action-task.json",
                          "derived/D16-reasoning-effort-max-thinking.json", "derived/D22-wo-eos-prefill.json",
                          "derived/D12-multiple-tool-calls-results-sorted.json"}) {
    INFO(rel);
    const Json v = vector_file(rel);
    Json req = v["params"];
    req["messages"] = v["messages"];
    write_file(dir.path / "req.json", req.dump());
    const Result r = run_cli(dir, "chat-template --request '" + (dir.path / "req.json").string() + "'");
    CHECK(r.code == 0);
    CHECK(r.err.empty());
    CHECK(r.out == v["expected_prompt"].get<std::string>());
  }
  SECTION("missing keys take the release defaults") {
    write_file(dir.path / "req.json", R"({"messages":[{"role":"user","content":"Hello"}],"thinking_mode":"chat"})");
    const Result r = run_cli(dir, "chat-template --request '" + (dir.path / "req.json").string() + "'");
    CHECK(r.code == 0);
    CHECK(r.out == vector_file("derived/D01-chat-single-user.json")["expected_prompt"].get<std::string>());
  }
  SECTION("0731 effort tiers through \"revision\"") {
    const Json v = vector_file("derived/V0731-03-effort-max.json");
    Json req = v["params"];
    req["messages"] = v["messages"];
    req["revision"] = "0731";
    write_file(dir.path / "req.json", req.dump());
    CHECK(run_cli(dir, "chat-template --request '" + (dir.path / "req.json").string() + "'").out == v["expected_prompt"].get<std::string>());
  }
}

TEST_CASE("chat cli: invalid input exits 1 with the error on stderr", "[chat][cli]") {
  TempDir dir;
  write_file(dir.path / "req.json", R"({"messages":[{"role":"developer","content":""}],"thinking_mode":"chat"})");
  Result r = run_cli(dir, "chat-template --request '" + (dir.path / "req.json").string() + "'");
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("dsv4 chat-template: error: messages[0] (developer)") != std::string::npos);

  write_file(dir.path / "req.json", "{not json");
  CHECK(run_cli(dir, "chat-template --request '" + (dir.path / "req.json").string() + "'").code == 1);
  CHECK(run_cli(dir, "chat-template --request '" + (dir.path / "missing.json").string() + "'").code == 1);
}

TEST_CASE("chat cli: parse-completion strict and lenient", "[chat][cli]") {
  TempDir dir;
  const fs::path in = dir.path / "completion.txt";
  for (const char* rel : {"derived/P05-multiple-tool-calls-typed.json", "official/O1p-parse-first-assistant-tool-call.json",
                          "derived/P21-string-false-raw-passthrough.json", "derived/P11-truncated-content-no-eos.json",
                          "derived/P18-tool-call-inside-reasoning.json"}) {
    INFO(rel);
    const Json v = vector_file(rel);
    write_file(in, v["completion"].get<std::string>());
    const std::string mode = v["params"]["thinking_mode"].get<std::string>();
    const Result strict = run_cli(dir, "parse-completion --thinking-mode " + mode, in.string());
    const Result lenient = run_cli(dir, "parse-completion --thinking-mode " + mode + " --lenient", in.string());
    CHECK(lenient.code == 0);
    if (v.contains("expected")) {
      CHECK(strict.code == 0);
      CHECK(Json::parse(strict.out) == v["expected"]);
      CHECK(Json::parse(lenient.out) == v["expected"]);
    } else {
      CHECK(strict.code == 1);
      CHECK(strict.out.empty());
      CHECK(strict.err.find(v["expected_error"]["message"].get<std::string>()) != std::string::npos);
      const Json l = Json::parse(lenient.out);
      CHECK(l["role"] == "assistant");
      CHECK(l.contains("tool_calls"));
    }
  }
  CHECK(run_cli(dir, "parse-completion --thinking-mode maybe", in.string()).code == 1);
}
