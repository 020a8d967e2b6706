// Chat format: every vector in tests/data/chat-vectors (a copy of ../shared/spec/chat-vectors)
// through encode_messages and the strict / lenient parsers, plus the spec rules that the stored
// vectors do not cover (Python number formatting, invalid-JSON arguments, merging, parse errors),
// error messages that name the message, and round trips encoder -> parser.
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"

using dsv4::chat::Json;
namespace chat = dsv4::chat;

namespace {

std::string vectors_dir() { return dsv4_test::source_dir() + "/tests/data/chat-vectors/"; }

Json load_json(const std::string& path) { return Json::parse(dsv4_test::read_file(path)); }

struct Vector {
  std::string id;
  Json data;
  Json entry;
};

std::vector<Vector> load_vectors(const std::string& kind) {
  const Json index = load_json(vectors_dir() + "index.json");
  std::vector<Vector> out;
  for (const auto& e : index["vectors"])
    if (e["kind"] == kind) out.push_back({e["id"].get<std::string>(), load_json(vectors_dir() + e["file"].get<std::string>()), e});
  return out;
}

chat::EncodeOptions options_of(const Vector& v) {
  const Json& p = v.data["params"];
  chat::EncodeOptions o;
  o.drop_thinking = p.value("drop_thinking", true);
  o.add_default_bos_token = p.value("add_default_bos_token", true);
  if (p.contains("reasoning_effort") && !p["reasoning_effort"].is_null()) o.reasoning_effort = p["reasoning_effort"].get<std::string>();
  o.revision = chat::parse_revision(v.entry["encoder_revision"].get<std::string>());
  return o;
}

chat::ThinkingMode mode_of(const Vector& v) { return chat::parse_thinking_mode(v.data["params"]["thinking_mode"].get<std::string>()); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dsv4::Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

bool has_marker(const std::string& s) {
  for (std::string_view m : {chat::kBos, chat::kEos, chat::kThinkStart, chat::kThinkEnd, chat::kDsml})
    if (s.find(m) != std::string::npos) return true;
  return false;
}

const std::string kEos(chat::kEos);
const std::string kDsml(chat::kDsml);
std::string dsml(const std::string& rest) { return kDsml + rest; }

}  // namespace

TEST_CASE("chat format: every encode vector renders byte for byte", "[chat]") {
  const auto vectors = load_vectors("encode");
  REQUIRE(vectors.size() >= 34);
  size_t passed = 0;
  for (const auto& v : vectors) {
    INFO(v.id);
    REQUIRE_FALSE(v.entry["expects_error"].get<bool>());
    const std::string prompt = chat::encode_messages(v.data["messages"], mode_of(v), options_of(v));
    CHECK(prompt == v.data["expected_prompt"].get<std::string>());
    passed += prompt == v.data["expected_prompt"].get<std::string>();
  }
  CHECK(passed == vectors.size());
}

TEST_CASE("chat format: official raw fixtures equal the restated vectors", "[chat]") {
  for (int n = 1; n <= 4; ++n) {
    INFO(n);
    const Json input = load_json(vectors_dir() + "official/raw/test_input_" + std::to_string(n) + ".json");
    std::ifstream f(vectors_dir() + "official/raw/test_output_" + std::to_string(n) + ".txt", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    // The release test script encodes case 4 in chat mode and the others in thinking mode.
    const auto mode = n == 4 ? chat::ThinkingMode::chat : chat::ThinkingMode::thinking;
    const Json& messages = input.is_object() ? input["messages"] : input;
    chat::EncodeOptions opt;
    if (input.is_object() && input.contains("tools") && !input["tools"].is_null()) {
      // test_input files carry request-level tools that the release script hangs on the first message.
      Json req = input;
      req["thinking_mode"] = std::string(chat::to_string(mode));
      CHECK(chat::encode_request(req) == ss.str());
    } else {
      CHECK(chat::encode_messages(messages, mode, opt) == ss.str());
    }
  }
}

TEST_CASE("chat format: parse vectors, strict mode", "[chat]") {
  const auto vectors = load_vectors("parse");
  REQUIRE(vectors.size() >= 21);
  size_t errors = 0;
  for (const auto& v : vectors) {
    INFO(v.id);
    const std::string text = v.data["completion"].get<std::string>();
    if (v.data.contains("expected")) {
      REQUIRE_FALSE(v.entry["expects_error"].get<bool>());
      const auto msg = chat::parse_message_from_completion_text(text, mode_of(v));
      CHECK(msg.to_json() == v.data["expected"]);
    } else {
      ++errors;
      REQUIRE(v.entry["expects_error"].get<bool>());
      const std::string expected = v.data["expected_error"]["message"].get<std::string>();
      const std::string got = error_of([&] { chat::parse_message_from_completion_text(text, mode_of(v)); });
      CAPTURE(got, expected);
      CHECK(got.rfind(expected, 0) == 0);  // our message starts with the release's
    }
  }
  CHECK(errors >= 9);
}

TEST_CASE("chat format: parse vectors, lenient mode", "[chat]") {
  // What the documented lenient rules give for the texts the release rejects.
  struct Want {
    const char* content;
    const char* reasoning;
    std::vector<chat::ToolCall> calls;
  };
  const std::map<std::string, Want> lenient = {
      {"P10-truncated-thinking", {"", "Let me think about this carefully. First, ", {}}},
      {"P11-truncated-content-no-eos", {"The answer is", "Done thinking.", {}}},
      {"P12-chat-missing-eos", {"The answer is 4.", "", {}}},
      {"P13-malformed-invoke-missing-newline", {"", "", {{"get_time", "{}"}}}},
      {"P14-malformed-bad-string-flag", {"", "", {}}},
      {"P16-malformed-text-after-tool-calls", {"", "", {{"get_time", "{}"}}}},
      {"P17-malformed-truncated-tool-call", {"", "", {}}},
      {"P18-tool-call-inside-reasoning", {"", "I should call the tool", {{"get_time", "{}"}}}},
      {"P20-tool-block-without-blank-line", {"Calling.", "", {{"get_time", "{}"}}}},
  };
  size_t checked = 0;
  for (const auto& v : load_vectors("parse")) {
    INFO(v.id);
    const std::string text = v.data["completion"].get<std::string>();
    const auto msg = chat::parse_message_from_completion_text(text, mode_of(v), chat::ParseMode::lenient);
    CHECK_FALSE(has_marker(msg.content));
    CHECK_FALSE(has_marker(msg.reasoning_content));
    if (v.data.contains("expected")) {
      // Lenient equals strict whenever strict accepts.
      CHECK(msg.to_json() == v.data["expected"]);
      CHECK(msg.warnings.empty());
      ++checked;
    } else {
      REQUIRE(lenient.count(v.id) == 1);
      const Want& w = lenient.at(v.id);
      CHECK(msg.content == w.content);
      CHECK(msg.reasoning_content == w.reasoning);
      CHECK(msg.tool_calls == w.calls);
      ++checked;
    }
  }
  CHECK(checked >= 21);
}

TEST_CASE("chat format: lenient end-of-text handling and stray markers", "[chat]") {
  using chat::ParseMode;
  const auto T = chat::ThinkingMode::thinking;
  const auto C = chat::ThinkingMode::chat;
  auto lenient = [](const std::string& t, chat::ThinkingMode m) { return chat::parse_message_from_completion_text(t, m, ParseMode::lenient); };

  SECTION("stripped EOS: end of text is EOS, ended=false") {
    auto m = lenient("r</think>answer", T);
    CHECK(m.reasoning_content == "r");
    CHECK(m.content == "answer");
    CHECK_FALSE(m.ended);
    CHECK(lenient("r</think>answer" + kEos, T).ended);
  }
  SECTION("a leading <think> repeated by the model is dropped") {
    auto m = lenient("<think>r</think>a" + kEos, T);
    CHECK(m.reasoning_content == "r");
    CHECK(m.content == "a");
  }
  SECTION("stray </think> in chat mode (strict rejects it) is dropped") {
    const std::string t = "</think>Hello" + kEos;
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text(t, C); }), "Unexpected special token '</think>'"));
    auto m = lenient(t, C);
    CHECK(m.content == "Hello");
    CHECK_FALSE(m.warnings.empty());
  }
  SECTION("other DSML markup in content is removed up to its '>'") {
    auto m = lenient("a<" + dsml("invoke name=\"x\">") + "b" + kEos, C);
    CHECK(m.content == "ab");
  }
  SECTION("removing a marker never creates another one") {
    auto m = lenient("x</thi<think>nk>y" + kEos, C);
    CHECK_FALSE(has_marker(m.content));
  }
  SECTION("text after EOS is ignored") {
    auto m = lenient("a" + kEos + "junk", C);
    CHECK(m.content == "a");
    CHECK_FALSE(m.warnings.empty());
  }
}

TEST_CASE("chat format: behaviours of the spec beyond the stored vectors", "[chat]") {
  const auto T = chat::ThinkingMode::thinking;
  const auto C = chat::ThinkingMode::chat;
  const std::string bos(chat::kBos), user(chat::kUser), asst(chat::kAssistant);

  SECTION("consecutive user and tool messages collapse into one user turn") {
    Json msgs = Json::parse(R"([{"role":"user","content":"a"},{"role":"user","content":"b"}])");
    CHECK(chat::encode_messages(msgs, C) == bos + user + "a\n\nb" + asst + "</think>");
  }
  SECTION("a user message after a task-carrying user turn starts a new turn") {
    Json msgs = Json::parse(R"([{"role":"user","content":"a","task":"query"},{"role":"user","content":"b"}])");
    CHECK(chat::encode_messages(msgs, C) == bos + user + "a" + user + "b" + asst + "</think>");
  }
  SECTION("arguments: invalid JSON becomes one raw string parameter") {
    Json msgs = Json::parse(R"([{"role":"user","content":"q"},{"role":"assistant","content":"","tool_calls":[
      {"type":"function","function":{"name":"f","arguments":"{oops"}}]}])");
    const std::string p = chat::encode_messages(msgs, C);
    CHECK(contains(p, "<" + dsml("parameter") + " name=\"arguments\" string=\"true\">{oops</" + dsml("parameter") + ">"));
  }
  SECTION("arguments: Python number formatting, exact big integers, raw unicode") {
    const std::string args =
        R"({"a": 1e30, "b": 1.0, "c": -0.0, "d": 123456789012345678901234567890, "e": 1E5, "f": 0.0001, "g": 1e-5,)"
        R"( "h": 1e16, "i": 1e15, "j": [1.5, {"k": "\u00e9\n"}], "l": "\u4f60\u597d\ud83d\ude00", "m": -0, "n": 2.50})";
    Json msgs = Json::array({Json{{"role", "user"}, {"content", "q"}},
                             Json{{"role", "assistant"}, {"content", ""},
                                  {"tool_calls", Json::array({Json{{"type", "function"},
                                                                   {"function", Json{{"name", "f"}, {"arguments", args}}}}})}}});
    const std::string p = chat::encode_messages(msgs, C);
    auto param = [&](const std::string& k, const std::string& flag, const std::string& v) {
      return "<" + dsml("parameter") + " name=\"" + k + "\" string=\"" + flag + "\">" + v + "</" + dsml("parameter") + ">";
    };
    CHECK(contains(p, param("a", "false", "1e+30")));
    CHECK(contains(p, param("b", "false", "1.0")));
    CHECK(contains(p, param("c", "false", "-0.0")));
    CHECK(contains(p, param("d", "false", "123456789012345678901234567890")));
    CHECK(contains(p, param("e", "false", "100000.0")));
    CHECK(contains(p, param("f", "false", "0.0001")));
    CHECK(contains(p, param("g", "false", "1e-05")));
    CHECK(contains(p, param("h", "false", "1e+16")));
    CHECK(contains(p, param("i", "false", "1000000000000000.0")));
    CHECK(contains(p, param("j", "false", "[1.5, {\"k\": \"\xC3\xA9\\n\"}]")));
    CHECK(contains(p, param("l", "true", "\xE4\xBD\xA0\xE5\xA5\xBD\xF0\x9F\x98\x80")));
    CHECK(contains(p, param("m", "false", "0")));
    CHECK(contains(p, param("n", "false", "2.5")));
  }
  SECTION("py_json_dumps follows json.dumps(ensure_ascii=False)") {
    Json v = Json::parse(R"({"z": [1, 2.0, null, true], "a": "q\"\\\u0001\u007f\u00e9", "n": {}})");
    CHECK(chat::py_json_dumps(v) == "{\"z\": [1, 2.0, null, true], \"a\": \"q\\\"\\\\\\u0001\x7f\xC3\xA9\", \"n\": {}}");
  }
  SECTION("strict parse: multi-line parameter values and duplicate parameters") {
    const std::string block_start = "\n\n<" + dsml("tool_calls") + ">\n<" + dsml("invoke") + " name=\"w\">\n";
    const std::string p1 = "<" + dsml("parameter") + " name=\"code\" string=\"true\">line1\nline2 <b>\"q\"</" + dsml("parameter") + ">\n";
    const std::string end = "</" + dsml("invoke") + ">\n</" + dsml("tool_calls") + ">" + kEos;
    auto m = chat::parse_message_from_completion_text(block_start + p1 + end, C);
    REQUIRE(m.tool_calls.size() == 1);
    CHECK(m.tool_calls[0].arguments == "{\"code\": \"line1\\nline2 <b>\\\"q\\\"\"}");
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text(block_start + p1 + p1 + end, C); }),
                   "Duplicate parameter name: 'code'"));
    auto l = chat::parse_message_from_completion_text(block_start + p1 + p1 + end, C, chat::ParseMode::lenient);
    CHECK(l.tool_calls.empty());  // malformed call dropped, not guessed
  }
  SECTION("strict parse: a completion must not contain stray markers") {
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("a" + std::string(chat::kBos) + "b" + kEos, C); }),
                   "Unexpected special token"));
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("a" + kEos + "b", C); }), "Unexpected content at end"));
  }
  SECTION("thinking mode string API") {
    CHECK(chat::encode_messages(Json::parse(R"([{"role":"user","content":"x"}])"), "thinking") == bos + user + "x" + asst + "<think>");
    CHECK(contains(error_of([] { chat::encode_messages(Json::array(), "think"); }), "thinking_mode"));
  }
  SECTION("context: BOS omitted, only new messages rendered") {
    chat::EncodeOptions o;
    o.context = Json::parse(R"([{"role":"user","content":"a"},{"role":"assistant","content":"b"}])");
    CHECK(chat::encode_messages(Json::parse(R"([{"role":"user","content":"c"}])"), C, o) == user + "c" + asst + "</think>");
  }
  (void)T;
}

TEST_CASE("chat format: invalid conversations name the message and the expectation", "[chat]") {
  const auto C = chat::ThinkingMode::chat;
  const auto T = chat::ThinkingMode::thinking;
  auto err = [&](const char* msgs, chat::ThinkingMode m = chat::ThinkingMode::chat, chat::EncodeOptions o = {}) {
    return error_of([&] { chat::encode_messages(Json::parse(msgs), m, o); });
  };
  CHECK(contains(err(R"([{"role":"user","content":"q"},{"role":"developer","content":""}])"), "messages[1] (developer): content must be a non-empty string"));
  CHECK(contains(err(R"([{"role":"wizard","content":"q"}])"), "messages[0]: unknown role \"wizard\""));
  CHECK(contains(err(R"([{"role":"user","content":"q","task":"poem"}])"), "invalid task \"poem\""));
  CHECK(contains(err(R"([{"role":"user","content":null}])"), "messages[0] (user): content must be a string"));
  CHECK(contains(err(R"({"role":"user"})"), "messages: expected an array"));
  CHECK(contains(err(R"([{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"[1]"}}]}])"),
                 "messages[1] (assistant): tool_calls[0].function.arguments: the JSON must be an object"));
  chat::EncodeOptions o;
  o.reasoning_effort = "low";
  CHECK(contains(err(R"([{"role":"user","content":"q"}])", T, o), "reasoning_effort"));
  o.revision = chat::Revision::r0731;
  CHECK(err(R"([{"role":"user","content":"q"}])", T, o) == "(no error)");
  (void)C;
}

TEST_CASE("chat format: encode_request (CLI / server request object)", "[chat]") {
  const std::string bos(chat::kBos);
  SECTION("request-level tools go to a new empty system message when there is none") {
    Json req = Json::parse(R"({"messages":[{"role":"user","content":"q"}],"thinking_mode":"chat",
      "tools":[{"type":"function","function":{"name":"t","parameters":{}}}]})");
    const std::string p = chat::encode_request(req);
    CHECK(p.rfind(bos + "\n\n## Tools\n\n", 0) == 0);
    CHECK(contains(p, "{\"name\": \"t\", \"parameters\": {}}"));
  }
  SECTION("options under params (vector layout) and defaults") {
    Json req = Json::parse(R"({"messages":[{"role":"user","content":"q"}],"params":{"thinking_mode":"thinking"}})");
    CHECK(chat::encode_request(req) == bos + std::string(chat::kUser) + "q" + std::string(chat::kAssistant) + "<think>");
  }
  SECTION("thinking_mode is required") {
    CHECK(contains(error_of([] { chat::encode_request(Json::parse(R"({"messages":[]})")); }), "thinking_mode"));
  }
}

TEST_CASE("chat format: encoder -> strict parser round trip on the vectors' assistant turns", "[chat]") {
  size_t round_trips = 0;
  for (const auto& v : load_vectors("encode")) {
    for (const auto& m : v.data["messages"]) {
      if (m.value("role", "") != "assistant" || m.value("wo_eos", false)) continue;
      INFO(v.id);
      for (auto mode : {chat::ThinkingMode::chat, chat::ThinkingMode::thinking}) {
        const Json user = Json::array({Json{{"role", "user"}, {"content", "q"}}});
        Json conv = user;
        conv.push_back(m);
        conv.back().erase("task");
        chat::EncodeOptions o;
        o.drop_thinking = false;
        const std::string prompt = chat::encode_messages(user, mode, o);
        const std::string full = chat::encode_messages(conv, mode, o);
        REQUIRE(full.rfind(prompt, 0) == 0);
        const auto parsed = chat::parse_message_from_completion_text(full.substr(prompt.size()), mode);
        CHECK(parsed.content == m.value("content", ""));
        CHECK(parsed.reasoning_content == (mode == chat::ThinkingMode::thinking ? m.value("reasoning_content", "") : ""));
        const Json calls = m.value("tool_calls", Json::array());
        REQUIRE(parsed.tool_calls.size() == calls.size());
        for (size_t k = 0; k < calls.size(); ++k) {
          CHECK(parsed.tool_calls[k].name == calls[k]["function"]["name"].get<std::string>());
          CHECK(Json::parse(parsed.tool_calls[k].arguments) == Json::parse(calls[k]["function"]["arguments"].get<std::string>()));
        }
        ++round_trips;
      }
    }
  }
  CHECK(round_trips >= 20);
}

TEST_CASE("chat format: completion text must be valid UTF-8", "[chat]") {
  for (auto pm : {chat::ParseMode::strict, chat::ParseMode::lenient}) {
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("ab\xFF" "cd", chat::ThinkingMode::chat, pm); }),
                   "completion text: invalid UTF-8 at byte offset 2"));
    // Overlong, surrogate and truncated sequences.
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("a\xC0\xAF", chat::ThinkingMode::chat, pm); }),
                   "invalid UTF-8 at byte offset 1"));
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("\xED\xA0\x80", chat::ThinkingMode::chat, pm); }),
                   "invalid UTF-8 at byte offset 0"));
    CHECK(contains(error_of([&] { chat::parse_message_from_completion_text("xy\xE4\xB8", chat::ThinkingMode::chat, pm); }),
                   "invalid UTF-8 at byte offset 2"));
  }
  const auto m = chat::parse_message_from_completion_text("\xE4\xB8\xAD\xF0\x9F\x98\x80" + std::string(chat::kEos), chat::ThinkingMode::chat);
  CHECK(m.content == "\xE4\xB8\xAD\xF0\x9F\x98\x80");
}

TEST_CASE("chat format: caller JSON deeper than the limit is rejected, not a stack overflow", "[chat]") {
  auto tools_with_depth = [](size_t depth) {
    return R"([{"role":"system","content":"s","tools":[{"type":"function","function":{"name":"f","parameters":)" +
           std::string(depth, '[') + std::string(depth, ']') + R"(}}]},{"role":"user","content":"x"}])";
  };
  const std::string err = error_of([&] { chat::parse_json_limited(tools_with_depth(100000), "messages_json"); });
  CHECK(contains(err, "messages_json: JSON nested deeper than 512 levels"));
  const Json ok = chat::parse_json_limited(tools_with_depth(50), "messages_json");
  CHECK(contains(chat::encode_messages(ok, chat::ThinkingMode::chat), "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]"));
  // The limit itself: 512 levels in all are accepted, 513 are not.
  CHECK_NOTHROW(chat::parse_json_limited(std::string(512, '[') + std::string(512, ']'), "x"));
  CHECK(contains(error_of([&] { chat::parse_json_limited(std::string(513, '[') + std::string(513, ']'), "x"); }), "deeper than 512"));
  CHECK(contains(error_of([&] { chat::parse_json_limited("[1,", "ctx"); }), "ctx is not valid JSON"));
  CHECK(contains(error_of([&] { chat::parse_json_limited("[\"a\xFF\"]", "ctx"); }), "ctx is not valid JSON"));
}
