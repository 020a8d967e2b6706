// ChatPipeline without HTTP: real completion texts (the parse vectors, among them reasoning +
// </think> + content + two DSML tool calls) are tokenized with the real tokenizer and replayed the
// way the server sees them — token by token through the scheduler's StopMatcher (EOS stops it; with
// ignore_eos its text arrives too) — and in random byte splits. The concatenated deltas must equal
// the batch lenient parse, and no content / reasoning / arguments delta may carry <think>,
// </think>, ｜DSML｜ or EOS text.
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "chat_pipeline.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/tokenizer.hpp"

namespace chat = dsv4::chat;
using dsv4::server::ChatPipeline;
using dsv4::server::Json;

namespace {

const dsv4::Tokenizer& tokenizer() {
  static const dsv4::Tokenizer tok = dsv4::Tokenizer::from_file(dsv4_test::source_dir() + "/data/tokenizer/tokenizer.json");
  return tok;
}

struct Case {
  std::string id, text;
  chat::ThinkingMode mode;
};

Json load(const std::string& path) { return Json::parse(dsv4_test::read_file(path)); }

// Every parse vector of tests/data/chat-vectors (and ../shared/spec/chat-vectors when present).
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string& dir : {dsv4_test::source_dir() + "/tests/data/chat-vectors/",
                                dsv4_test::shared_dir() + "/spec/chat-vectors/"}) {
    std::ifstream probe(dir + "index.json");
    if (!probe.good()) continue;
    const Json index = load(dir + "index.json");
    for (const auto& e : index["vectors"]) {
      if (e["kind"] != "parse") continue;
      const Json v = load(dir + e["file"].get<std::string>());
      out.push_back({e["id"].get<std::string>(), v["completion"].get<std::string>(),
                     chat::parse_thinking_mode(v["params"]["thinking_mode"].get<std::string>())});
    }
  }
  return out;
}

struct Collected {
  std::string reasoning, content;
  std::vector<chat::ToolCall> calls;
  std::vector<std::string> ids;
  std::vector<std::string> texts;  // every text field of every delta (marker checks)
  Json message;
  int reasoning_tokens = 0;
};

void collect(const std::vector<Json>& deltas, Collected& c) {
  for (const Json& d : deltas) {
    REQUIRE(d.is_object());
    REQUIRE(!d.empty());
    if (d.contains("reasoning_content")) {
      c.reasoning += d["reasoning_content"].get<std::string>();
      c.texts.push_back(d["reasoning_content"].get<std::string>());
    }
    if (d.contains("content")) {
      c.content += d["content"].get<std::string>();
      c.texts.push_back(d["content"].get<std::string>());
    }
    if (d.contains("tool_calls")) {
      for (const Json& tc : d["tool_calls"]) {
        const size_t idx = tc["index"].get<size_t>();
        if (tc.contains("id")) {  // the first delta of a call: index, id, type, name
          REQUIRE(idx == c.calls.size());
          REQUIRE(tc["type"] == "function");
          REQUIRE(tc["id"].get<std::string>().rfind("call_", 0) == 0);
          c.calls.push_back({tc["function"]["name"].get<std::string>(), ""});
          c.ids.push_back(tc["id"].get<std::string>());
        }
        REQUIRE(idx < c.calls.size());
        const std::string args = tc["function"].value("arguments", "");
        c.calls[idx].arguments += args;
        c.texts.push_back(args);
        c.texts.push_back(tc["function"].value("name", ""));
      }
    }
  }
}

void check_no_markup(const Collected& c) {
  const std::string forbidden[] = {std::string(chat::kThinkStart), std::string(chat::kThinkEnd), std::string(chat::kDsml),
                                   std::string(chat::kEos), std::string(chat::kBos)};
  for (const std::string& t : c.texts)
    for (const std::string& f : forbidden) {
      INFO("delta text: " << t);
      CHECK(t.find(f) == std::string::npos);
    }
}

void check_equals_batch(const Collected& c, const std::string& text, chat::ThinkingMode mode) {
  const chat::ParsedMessage batch = chat::parse_message_from_completion_text(text, mode, chat::ParseMode::lenient);
  CHECK(c.reasoning == batch.reasoning_content);
  CHECK(c.content == batch.content);
  REQUIRE(c.calls.size() == batch.tool_calls.size());
  for (size_t i = 0; i < c.calls.size(); ++i) {
    CHECK(c.calls[i].name == batch.tool_calls[i].name);
    CHECK(c.calls[i].arguments == batch.tool_calls[i].arguments);
  }
  // The final message says the same as the deltas.
  CHECK(c.message["role"] == "assistant");
  if (c.calls.empty() || !batch.content.empty()) CHECK(c.message["content"] == batch.content);
  else CHECK(c.message["content"].is_null());
  if (mode == chat::ThinkingMode::thinking) CHECK(c.message["reasoning_content"] == batch.reasoning_content);
  else CHECK(!c.message.contains("reasoning_content"));
  if (c.calls.empty()) {
    CHECK(!c.message.contains("tool_calls"));
  } else {
    REQUIRE(c.message["tool_calls"].size() == c.calls.size());
    for (size_t i = 0; i < c.calls.size(); ++i) {
      CHECK(c.message["tool_calls"][i]["id"] == c.ids[i]);
      CHECK(c.message["tool_calls"][i]["function"]["name"] == c.calls[i].name);
      CHECK(c.message["tool_calls"][i]["function"]["arguments"] == c.calls[i].arguments);
    }
  }
}

// Token by token, exactly as the server receives it: ids → StopMatcher (the scheduler's) → piece.
Collected replay_tokens(const std::string& text, chat::ThinkingMode mode, bool stop_on_eos) {
  const dsv4::Tokenizer& tok = tokenizer();
  const std::vector<int32_t> ids = tok.encode(text);
  dsv4::StopParams sp;
  sp.max_tokens = static_cast<int>(ids.size()) + 1;
  sp.stop_on_eos = stop_on_eos;
  dsv4::StopMatcher m(&tok, sp);
  ChatPipeline::Options o;
  o.mode = mode;
  ChatPipeline p(o);
  Collected c;
  for (size_t i = 0; i < ids.size() && !m.done(); ++i) {
    const auto v = m.push(ids[i], false);
    collect(p.feed(v.piece), c);
  }
  if (!m.done()) collect(p.feed(m.finish(dsv4::StopReason::max_tokens)), c);
  collect(p.finish(), c);
  c.message = p.message();
  c.reasoning_tokens = p.reasoning_tokens();
  return c;
}

Collected replay_split(const std::string& text, chat::ThinkingMode mode, std::mt19937& rng) {
  ChatPipeline::Options o;
  o.mode = mode;
  ChatPipeline p(o);
  Collected c;
  for (size_t at = 0; at < text.size();) {
    const size_t n = std::min(text.size() - at, static_cast<size_t>(1 + rng() % 7));
    collect(p.feed(std::string_view(text).substr(at, n)), c);
    at += n;
  }
  collect(p.finish(), c);
  c.message = p.message();
  return c;
}

}  // namespace

TEST_CASE("token-by-token replay of every parse vector equals the batch lenient parse", "[chat_pipeline]") {
  const auto all = cases();
  REQUIRE(all.size() >= 10);
  for (const Case& k : all)
    for (bool stop_on_eos : {true, false}) {
      INFO(k.id << (stop_on_eos ? "" : " (ignore_eos: EOS text streamed)"));
      const Collected c = replay_tokens(k.text, k.mode, stop_on_eos);
      check_no_markup(c);
      check_equals_batch(c, k.text, k.mode);
    }
}

TEST_CASE("random byte splits give the same deltas' sum", "[chat_pipeline]") {
  std::mt19937 rng(12345);
  for (const Case& k : cases())
    for (int round = 0; round < 20; ++round) {
      INFO(k.id << " round " << round);
      const Collected c = replay_split(k.text, k.mode, rng);
      check_no_markup(c);
      check_equals_batch(c, k.text, k.mode);
    }
}

TEST_CASE("reasoning + </think> + content + two DSML tool calls (P05)", "[chat_pipeline]") {
  const Json v = load(dsv4_test::source_dir() + "/tests/data/chat-vectors/derived/P05-multiple-tool-calls-typed.json");
  const std::string text = v["completion"].get<std::string>();
  const Collected c = replay_tokens(text, chat::ThinkingMode::thinking, true);
  check_no_markup(c);
  CHECK(c.reasoning == "Two calls.");
  CHECK(c.content == "I'll check both.");
  REQUIRE(c.calls.size() == 2);
  CHECK(c.calls[0].name == "get_weather");
  CHECK(c.calls[0].arguments == R"({"city": "Paris"})");
  CHECK(c.calls[1].name == "calculate");
  CHECK(Json::parse(c.calls[1].arguments)["values"].size() == 3);
  CHECK(c.ids[0] != c.ids[1]);
  // Reasoning tokens: those before the one that closes the thoughts.
  const auto& tok = tokenizer();
  const auto reasoning_ids = tok.encode("Two calls.");
  CHECK(c.reasoning_tokens == static_cast<int>(reasoning_ids.size()));
}

TEST_CASE("a prefill (tool_choice enforcement) is parsed as generated, and tools can be switched off",
          "[chat_pipeline]") {
  const std::string d(chat::kDsml);
  const std::string prefill = std::string(chat::kThinkEnd) + "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"get_weather\">\n";
  const std::string rest = "<" + d + "parameter name=\"city\" string=\"true\">Paris</" + d + "parameter>\n</" + d +
                           "invoke>\n</" + d + "tool_calls>";
  ChatPipeline::Options o;
  o.mode = chat::ThinkingMode::thinking;
  o.prefill = prefill;
  o.make_call_id = [] { return std::string("call_fixed"); };
  ChatPipeline p(o);
  Collected c;
  const dsv4::Tokenizer& tok = tokenizer();
  dsv4::StreamDecoder dec(tok);
  for (int32_t id : tok.encode(rest)) collect(p.feed(dec.push(id)), c);
  collect(p.finish(), c);
  c.message = p.message();
  check_no_markup(c);
  REQUIRE(c.calls.size() == 1);
  CHECK(c.calls[0].name == "get_weather");
  CHECK(c.calls[0].arguments == R"({"city": "Paris"})");
  CHECK(c.reasoning.empty());
  CHECK(p.reasoning_tokens() == 0);
  CHECK(c.message["tool_calls"][0]["id"] == "call_fixed");
  CHECK(c.message["content"].is_null());

  // Tools off (no tools offered / tool_choice none): the call is dropped, no markup leaks.
  ChatPipeline::Options off;
  off.mode = chat::ThinkingMode::chat;
  off.tools_enabled = false;
  ChatPipeline q(off);
  Collected c2;
  collect(q.feed("Sure." + prefill.substr(chat::kThinkEnd.size()) + rest), c2);
  collect(q.finish(), c2);
  check_no_markup(c2);
  CHECK(c2.calls.empty());
  CHECK(c2.content == "Sure.");
  CHECK(!q.message().contains("tool_calls"));

  // parallel_tool_calls: false keeps the first call only.
  const Json v = load(dsv4_test::source_dir() + "/tests/data/chat-vectors/derived/P05-multiple-tool-calls-typed.json");
  ChatPipeline::Options one;
  one.mode = chat::ThinkingMode::thinking;
  one.max_tool_calls = 1;
  ChatPipeline r(one);
  Collected c3;
  collect(r.feed(v["completion"].get<std::string>()), c3);
  collect(r.finish(), c3);
  REQUIRE(c3.calls.size() == 1);
  CHECK(c3.calls[0].name == "get_weather");
}

TEST_CASE("finish is idempotent and feed after finish yields nothing", "[chat_pipeline]") {
  ChatPipeline p(ChatPipeline::Options{});
  auto a = p.feed("Hello");
  auto b = p.finish();
  CHECK(p.finish().empty());
  CHECK(p.feed("more").empty());
  std::string all;
  for (auto& d : a) all += d.value("content", "");
  for (auto& d : b) all += d.value("content", "");
  CHECK(all == "Hello");
  CHECK(p.message()["content"] == "Hello");
}
