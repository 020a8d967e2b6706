// Hostile-input regressions outside the file readers (issue 15): completion parsing must stay
// linear in the number of DSML invokes and parameters (strict was quadratic: 60,000 invokes took
// > 20 s), JSON built in code must not be walked recursively without a bound, and a thread pool
// whose thread creation fails part-way must throw a clean dsv4::Error (it used to hang / abort).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <cstdio>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"
#include "dsv4/cpu/threadpool.hpp"
#include "dsv4/error.hpp"

using namespace dsv4;
using chat::Json;

namespace {

std::string dsml(const std::string& s) { return std::string(chat::kDsml) + s; }

// A completion with `invokes` tool calls of `params` parameters each (~150 bytes per invoke).
std::string tool_completion(size_t invokes, size_t params) {
  std::string s = "Let me look.\n\n<" + dsml("tool_calls>\n");
  for (size_t i = 0; i < invokes; ++i) {
    s += "<" + dsml("invoke name=\"get_weather\">\n");
    for (size_t p = 0; p < params; ++p)
      s += "<" + dsml("parameter name=\"city" + std::to_string(p) + "\" string=\"true\">Beijing</" + dsml("parameter>\n"));
    s += "</" + dsml("invoke>\n");
  }
  s += "</" + dsml("tool_calls>") + std::string(chat::kEos);
  return s;
}

double seconds_of(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("robustness: completion parsing is linear in the number of invokes and parameters", "[robustness][chat]") {
  const std::string big = tool_completion(60000, 1);  // the campaign's size: ~9 MB
  REQUIRE(big.size() > 8000000);
  chat::ParsedMessage strict;
  const double t_big = seconds_of([&] {
    strict = chat::parse_message_from_completion_text(big, chat::ThinkingMode::chat, chat::ParseMode::strict);
  });
  REQUIRE(strict.tool_calls.size() == 60000);
  CHECK(strict.tool_calls.back().arguments == "{\"city0\": \"Beijing\"}");
  const std::string quarter = tool_completion(15000, 1);
  const double t_quarter = seconds_of([&] {
    (void)chat::parse_message_from_completion_text(quarter, chat::ThinkingMode::chat, chat::ParseMode::strict);
  });
  WARN("strict parse: 15,000 invokes " << t_quarter << " s, 60,000 invokes " << t_big << " s");
  // Linear: 4× the text costs ~4× (quadratic was 16×, > 20 s for the big one). Generous for a
  // loaded machine and sanitizer builds.
  CHECK(t_big < 10.0);
  CHECK(t_big < 10.0 * t_quarter + 0.5);

  // The lenient and streaming parsers agree and stay fast too.
  const double t_len = seconds_of([&] {
    const auto l = chat::parse_message_from_completion_text(big, chat::ThinkingMode::chat, chat::ParseMode::lenient);
    CHECK(l.same_message(strict));
  });
  CHECK(t_len < 10.0);
  chat::StreamParser sp(chat::ThinkingMode::chat, chat::ParseMode::strict);
  for (size_t i = 0; i < big.size(); i += 4093) (void)sp.feed(std::string_view(big).substr(i, 4093));
  (void)sp.finish();
  CHECK(sp.result().tool_calls.size() == 60000);

  // One invoke with 60,000 parameters: the duplicate-name check was quadratic as well.
  const std::string wide = tool_completion(1, 60000);
  const double t_wide = seconds_of([&] {
    const auto m = chat::parse_message_from_completion_text(wide, chat::ThinkingMode::chat, chat::ParseMode::strict);
    REQUIRE(m.tool_calls.size() == 1);
    const auto l = chat::parse_message_from_completion_text(wide, chat::ThinkingMode::chat, chat::ParseMode::lenient);
    CHECK(l.same_message(m));
  });
  CHECK(t_wide < 10.0);
  // ... and a duplicate among them is still found (strict rejects, lenient drops the call).
  std::string dup = wide;
  const std::string second = "name=\"city1\"";
  dup.replace(dup.find(second), second.size(), "name=\"city0\"");
  CHECK_THROWS_AS(chat::parse_message_from_completion_text(dup, chat::ThinkingMode::chat, chat::ParseMode::strict),
                  Error);
  CHECK(chat::parse_message_from_completion_text(dup, chat::ThinkingMode::chat, chat::ParseMode::lenient).tool_calls.empty());
}

TEST_CASE("robustness: chat encoding bounds the depth of JSON built in code", "[robustness][chat]") {
  // parse_json_limited already refuses deep text; a value built in code (bindings, servers) could
  // still nest 100,000 deep and overflow the stack in the encoder's recursive copies and dumps.
  // (Built in place: copying it here would overflow the stack of the test itself.)
  Json messages = Json::array();
  messages.push_back({{"role", "user"}, {"content", "hi"}});
  messages.push_back({{"role", "assistant"}, {"content", ""},
                      {"tool_calls", Json::array({{{"type", "function"}, {"function", {{"name", "f"}, {"arguments", nullptr}}}}})}});
  Json* cur = &messages[1]["tool_calls"][0]["function"]["arguments"];
  *cur = Json::array();
  for (int i = 0; i < 100000; ++i) {
    cur->push_back(Json::array());
    cur = &cur->back();
  }
  try {
    chat::encode_messages(messages, chat::ThinkingMode::chat);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
    CHECK(std::string(e.what()).find("nested deeper than 512") != std::string::npos);
  }
  Json request = {{"thinking_mode", "chat"}};
  request["messages"] = std::move(messages);
  CHECK_THROWS_AS(chat::encode_request(request), Error);
  messages = std::move(request["messages"]);
  // Depth within the limit still renders.
  Json ok = Json::array();
  cur = &ok;
  for (int i = 0; i < 100; ++i) {
    cur->push_back(Json::array());
    cur = &cur->back();
  }
  messages[1]["tool_calls"][0]["function"]["arguments"] = ok;
  CHECK(chat::encode_messages(messages, chat::ThinkingMode::chat).find("[[[[") != std::string::npos);
}

TEST_CASE("robustness: thread pool limits and a failed thread creation", "[robustness][threadpool]") {
  try {
    cpu::ThreadPool p(cpu::ThreadPool::kMaxThreads + 1);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.status() == Status::invalid_argument);
  }
#if defined(__SANITIZE_ADDRESS__)
  WARN("SKIP: the address-space limit below cannot be combined with AddressSanitizer's shadow memory");
#else
  // In a child: cap the address space a little above what it uses, so thread creation fails after
  // a few threads (each needs a stack mapping); the pool must join those and throw. A hang (the
  // old behaviour) is caught by the alarm.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(20);
    size_t vm_kb = 0;
    std::ifstream st("/proc/self/status");
    for (std::string line; std::getline(st, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoul(line.substr(7));
    if (vm_kb == 0) ::_exit(3);
    const rlim_t cap = (vm_kb + 96 * 1024) * 1024;  // room for ~10 thread stacks of 8 MB
    const rlimit rl{cap, cap};
    if (::setrlimit(RLIMIT_AS, &rl) != 0) ::_exit(3);
    try {
      cpu::ThreadPool p(1000);
      ::_exit(4);  // all started: the limit did not bite
    } catch (const Error& e) {
      const bool named = std::string(e.what()).find("could not start thread") != std::string::npos;
      ::_exit(e.status() == Status::out_of_memory && named ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));  // not killed by SIGALRM (a hang) or SIGABRT (std::terminate)
  const int code = WEXITSTATUS(status);
  if (code == 3 || code == 4) {
    WARN("SKIP: could not make thread creation fail here (code " << code << ")");
  } else {
    CHECK(code == 0);
  }
#endif
  // A pool still works after all this.
  cpu::ThreadPool ok(4);
  std::atomic<int64_t> sum{0};
  ok.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  CHECK(sum == 499500);
}
