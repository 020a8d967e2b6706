// Streaming parser: on every parse vector (and on extra texts with stray markers, unicode and
// tool calls), fed at every byte split point, one byte at a time, and in random chunks, it must
// give the batch parser's final message (strict: same verdict), its deltas must add up to that
// message, and no delta may contain a marker or end inside a UTF-8 character.
#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"
#include "dsv4/error.hpp"

using dsv4::chat::Json;
namespace chat = dsv4::chat;

namespace {

Json load_json(const std::string& path) { return Json::parse(dsv4_test::read_file(path)); }

struct Case {
  std::string id;
  std::string text;
  chat::ThinkingMode mode;
};

std::vector<Case> cases() {
  const std::string dir = dsv4_test::source_dir() + "/tests/data/chat-vectors/";
  const Json index = load_json(dir + "index.json");
  std::vector<Case> out;
  for (const auto& e : index["vectors"]) {
    if (e["kind"] != "parse") continue;
    const Json v = load_json(dir + e["file"].get<std::string>());
    out.push_back({e["id"].get<std::string>(), v["completion"].get<std::string>(),
                   chat::parse_thinking_mode(v["params"]["thinking_mode"].get<std::string>())});
  }
  const std::string eos(chat::kEos), d(chat::kDsml);
  const auto T = chat::ThinkingMode::thinking, C = chat::ThinkingMode::chat;
  out.push_back({"x-stray-markers", "<think>r\xC3\xA9</thi<think>nk>a\n\n\nb</think>" + eos + "tail", T});
  out.push_back({"x-dsml-tag-in-content", "a<" + d + "invoke name=\"f\">b\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"f\">\n<" + d +
                 "parameter name=\"k\" string=\"false\">[1, 2]</" + d + "parameter>\n</" + d + "invoke>\n</" + d + "tool_calls>" + eos, C});
  out.push_back({"x-two-invokes-no-close", "\xE6\x80\x9D</think>\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"a\">\n\n</" + d + "invoke>\n<" + d +
                 "invoke name=\"b\">\n<" + d + "parameter name=\"x\" string=\"true\">\xF0\x9F\x98\x80</" + d + "parameter>\n", T});
  out.push_back({"x-emoji-only", "\xF0\x9F\x98\x80\xF0\x9F\x98\x81", C});
  out.push_back({"x-newlines-before-eos", "a\n\n" + eos, C});
  out.push_back({"x-partial-marker-at-end", "a<\xEF\xBD\x9C" "end", C});
  // Chains of marker prefixes that collapse as stray markers are erased, and newline runs.
  out.push_back({"x-prefix-chain", "a<th<<th<think>ink>ink>b</thi<think>nk>c", C});
  out.push_back({"x-eos-across-erasure", "a<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence" + d + "\xEF\xBD\x9C>tail", C});
  out.push_back({"x-newline-runs", "a\n\n\n\n<\n\n\n<" + d + "tool_calls>\n</" + d + "tool_calls>" + eos, C});
  return out;
}

struct Run {
  bool threw = false;
  std::string error;
  chat::ParsedMessage msg;
  std::string reasoning, content;       // concatenated deltas
  std::vector<chat::ToolCall> calls;    // from deltas
  bool marker_in_delta = false;
  bool split_utf8 = false;
};

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

Run run_stream(const std::string& text, chat::ThinkingMode mode, chat::ParseMode pm, const std::vector<size_t>& cuts) {
  Run r;
  chat::StreamParser sp(mode, pm);
  auto take = [&](const std::vector<chat::Delta>& ds) {
    for (const auto& d : ds) {
      for (std::string_view m : {chat::kBos, chat::kEos, chat::kThinkStart, chat::kThinkEnd, chat::kDsml})
        if (d.kind != chat::Delta::Kind::tool_call_arguments && d.text.find(m) != std::string::npos) r.marker_in_delta = true;
      if ((d.kind == chat::Delta::Kind::reasoning || d.kind == chat::Delta::Kind::content) && !valid_utf8(d.text)) r.split_utf8 = true;
      switch (d.kind) {
        case chat::Delta::Kind::reasoning: r.reasoning += d.text; break;
        case chat::Delta::Kind::content: r.content += d.text; break;
        case chat::Delta::Kind::tool_call_name:
          REQUIRE(d.tool_index == static_cast<int>(r.calls.size()));
          r.calls.push_back({d.text, ""});
          break;
        case chat::Delta::Kind::tool_call_arguments:
          REQUIRE(d.tool_index == static_cast<int>(r.calls.size()) - 1);
          r.calls.back().arguments += d.text;
          break;
      }
    }
  };
  size_t prev = 0;
  for (size_t c : cuts) {
    take(sp.feed(std::string_view(text).substr(prev, c - prev)));
    prev = c;
  }
  take(sp.feed(std::string_view(text).substr(prev)));
  take(sp.finish());
  try {
    r.msg = sp.result();
  } catch (const dsv4::Error& e) {
    r.threw = true;
    r.error = e.what();
  }
  return r;
}

// Compares one streamed run with the batch parse; returns false (after CHECKs) on a mismatch.
bool agrees(const Run& r, const std::string& text, chat::ThinkingMode mode, chat::ParseMode pm, const std::string& batch_error,
            const chat::ParsedMessage& batch) {
  bool ok = true;
  auto expect = [&](bool cond) {
    if (!cond) ok = false;
  };
  expect(!r.marker_in_delta);
  expect(!r.split_utf8 || !valid_utf8(text));
  if (!batch_error.empty()) {
    expect(r.threw && r.error == batch_error);
    return ok;
  }
  expect(!r.threw);
  expect(r.msg.same_message(batch));
  if (pm == chat::ParseMode::lenient) expect(r.msg.warnings == batch.warnings && r.msg.ended == batch.ended);
  // The deltas add up to the final message (strict: whenever the release accepts the text).
  expect(r.reasoning == batch.reasoning_content);
  expect(r.content == batch.content);
  expect(r.calls == batch.tool_calls);
  (void)mode;
  return ok;
}

}  // namespace

TEST_CASE("chat stream: every split point of every parse text gives the batch result", "[chat][stream]") {
  size_t split_points = 0, runs = 0;
  for (const auto& c : cases()) {
    for (auto pm : {chat::ParseMode::lenient, chat::ParseMode::strict}) {
      INFO(c.id << (pm == chat::ParseMode::strict ? " strict" : " lenient"));
      std::string batch_error;
      chat::ParsedMessage batch;
      try {
        batch = chat::parse_message_from_completion_text(c.text, c.mode, pm);
      } catch (const dsv4::Error& e) {
        batch_error = e.what();
      }
      if (pm == chat::ParseMode::lenient) REQUIRE(batch_error.empty());
      // One chunk, then two chunks at every byte offset.
      for (size_t i = 0; i <= c.text.size(); ++i) {
        CAPTURE(i);
        const Run r = run_stream(c.text, c.mode, pm, {i});
        const bool ok = agrees(r, c.text, c.mode, pm, batch_error, batch);
        CHECK(ok);
        if (!ok) break;
        ++split_points;
        ++runs;
      }
      // One byte at a time.
      std::vector<size_t> every;
      for (size_t i = 1; i < c.text.size(); ++i) every.push_back(i);
      CHECK(agrees(run_stream(c.text, c.mode, pm, every), c.text, c.mode, pm, batch_error, batch));
      // Random chunkings (fixed seed).
      std::mt19937 rng(1234);
      for (int t = 0; t < 20; ++t) {
        std::vector<size_t> cuts;
        for (size_t i = 1; i < c.text.size(); ++i)
          if (rng() % 5 == 0) cuts.push_back(i);
        CHECK(agrees(run_stream(c.text, c.mode, pm, cuts), c.text, c.mode, pm, batch_error, batch));
        ++runs;
      }
    }
  }
  INFO("split points " << split_points << ", runs " << runs);
  CHECK(split_points > 7000);
}

TEST_CASE("chat stream: every three-way split of the short texts", "[chat][stream]") {
  for (const auto& c : cases()) {
    if (c.text.size() > 120) continue;
    INFO(c.id);
    const auto batch = chat::parse_message_from_completion_text(c.text, c.mode, chat::ParseMode::lenient);
    bool all = true;
    for (size_t i = 0; i <= c.text.size() && all; ++i)
      for (size_t j = i; j <= c.text.size() && all; ++j)
        all = agrees(run_stream(c.text, c.mode, chat::ParseMode::lenient, {i, j}), c.text, c.mode, chat::ParseMode::lenient, "", batch);
    CHECK(all);
  }
}

TEST_CASE("chat stream: deltas arrive before the end and markers are held back", "[chat][stream]") {
  const std::string d(chat::kDsml);
  chat::StreamParser sp(chat::ThinkingMode::thinking);
  auto text_of = [](const std::vector<chat::Delta>& ds, chat::Delta::Kind k) {
    std::string s;
    for (const auto& x : ds)
      if (x.kind == k) s += x.text;
    return s;
  };
  CHECK(text_of(sp.feed("Let me "), chat::Delta::Kind::reasoning) == "Let me ");
  CHECK(text_of(sp.feed("think</th"), chat::Delta::Kind::reasoning) == "think");  // "</th" may start </think>
  auto ds = sp.feed("ink>Answer\n");
  CHECK(text_of(ds, chat::Delta::Kind::content) == "Answer");  // "\n" may precede a tool block
  ds = sp.feed("\n<" + d + "tool_calls>\n<" + d + "invoke name=\"f\">\n");
  CHECK(text_of(ds, chat::Delta::Kind::content).empty());
  ds = sp.feed("</" + d + "invoke>\n</" + d + "tool_calls>");
  REQUIRE(ds.size() == 2);
  CHECK(ds[0] == chat::Delta{chat::Delta::Kind::tool_call_name, "f", 0});
  CHECK(ds[1] == chat::Delta{chat::Delta::Kind::tool_call_arguments, "{}", 0});
  CHECK(sp.feed(std::string(chat::kEos)).empty());
  CHECK(sp.saw_eos());
  sp.finish();
  const auto m = sp.result();
  CHECK(m.content == "Answer");
  CHECK(m.reasoning_content == "Let me think");
  REQUIRE_THROWS(sp.feed("x"));
}

namespace {

struct Streamed {
  chat::ParsedMessage msg;
  size_t text_before_finish = 0;  // reasoning + content bytes emitted by feed()
};

// Feeds `text` one byte at a time (after `head`, fed whole).
Streamed stream_bytes(const std::string& text, chat::ThinkingMode mode) {
  Streamed r;
  chat::StreamParser sp(mode, chat::ParseMode::lenient);
  for (size_t i = 0; i < text.size(); ++i)
    for (const auto& d : sp.feed(std::string_view(text).substr(i, 1)))
      if (d.kind == chat::Delta::Kind::reasoning || d.kind == chat::Delta::Kind::content) r.text_before_finish += d.text.size();
  sp.finish();
  r.msg = sp.result();
  return r;
}

}  // namespace

// Performance guard that is also a correctness check: long runs of bytes that may start a marker
// (or precede a tool block) used to make every feed rescan the whole held-back tail (quadratic,
// minutes for these sizes); stray markers were erased with a rescan from the start of the field.
TEST_CASE("chat stream: long runs of newlines, '<' and stray markers stay linear", "[chat][stream]") {
  const auto C = chat::ThinkingMode::chat, T = chat::ThinkingMode::thinking;
  const auto t0 = std::chrono::steady_clock::now();
  {
    const std::string text = std::string(200000, '\n') + "x";
    const auto batch = chat::parse_message_from_completion_text(text, C, chat::ParseMode::lenient);
    CHECK(batch.content == text);
    const Streamed s = stream_bytes(text, C);
    CHECK(s.msg.same_message(batch));
    CHECK(s.text_before_finish == text.size());  // not held back until finish()
    chat::StreamParser sp(C);
    size_t early = 0;
    for (size_t i = 0; i < 200000; ++i)
      for (const auto& d : sp.feed("\n")) early += d.text.size();
    CHECK(early >= 200000 - 2);  // only the two newlines that may precede a tool block wait
  }
  {
    const std::string text = "r" + std::string(200000, '\n') + "</think>a";
    const auto batch = chat::parse_message_from_completion_text(text, T, chat::ParseMode::lenient);
    const Streamed s = stream_bytes(text, T);
    CHECK(s.msg.same_message(batch));
    CHECK(s.text_before_finish == text.size() - 8);
  }
  {
    const std::string text(200000, '<');
    const auto batch = chat::parse_message_from_completion_text(text, C, chat::ParseMode::lenient);
    CHECK(batch.content == text);
    CHECK(stream_bytes(text, C).msg.same_message(batch));
  }
  {
    std::string text;
    for (int i = 0; i < 40000; ++i) text += "<think>";
    text += "y";
    const auto batch = chat::parse_message_from_completion_text(text, C, chat::ParseMode::lenient);
    CHECK(batch.content == "y");
    CHECK(batch.warnings.size() == 40000);
    const Streamed s = stream_bytes(text, C);
    CHECK(s.msg.same_message(batch));
    CHECK(s.msg.warnings == batch.warnings);
  }
  {
    const std::string text = "<" + std::string(chat::kDsml) + "foo" + std::string(300000, 'a');
    const auto batch = chat::parse_message_from_completion_text(text, C, chat::ParseMode::lenient);
    CHECK(batch.content.empty());
    CHECK(stream_bytes(text, C).msg.same_message(batch));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO("seconds " << secs);
  CHECK(secs < 20.0);  // generous: well under a second when linear
}

TEST_CASE("chat stream: invalid UTF-8 is rejected, a character split across chunks is not", "[chat][stream]") {
  for (auto pm : {chat::ParseMode::lenient, chat::ParseMode::strict}) {
    chat::StreamParser sp(chat::ThinkingMode::chat, pm);
    std::string content;
    for (std::string_view piece : {std::string_view("a\xE4"), std::string_view("\xB8"), std::string_view("\xAD" "b\xF0\x9F"),
                                   std::string_view("\x98\x80"), chat::kEos})
      for (const auto& d : sp.feed(piece)) content += d.text;
    sp.finish();
    CHECK(content == "a\xE4\xB8\xAD" "b\xF0\x9F\x98\x80");
    CHECK(sp.result().content == content);
  }
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const dsv4::Error& e) {
      CHECK(e.status() == dsv4::Status::invalid_argument);
      return e.what();
    }
    return "(no error)";
  };
  {
    chat::StreamParser sp(chat::ThinkingMode::chat);
    sp.feed("ab");
    CHECK(error_of([&] { sp.feed("c\xFF" "d"); }).find("invalid UTF-8 at byte offset 3") != std::string::npos);
    sp.feed("\xE4");  // the rejected chunk was not taken
    CHECK(error_of([&] { sp.feed("x"); }).find("invalid UTF-8 at byte offset 2") != std::string::npos);
  }
  {
    chat::StreamParser sp(chat::ThinkingMode::chat);
    sp.feed("ab\xE4\xB8");
    CHECK(error_of([&] { sp.finish(); }).find("invalid UTF-8 at byte offset 2") != std::string::npos);
  }
}
