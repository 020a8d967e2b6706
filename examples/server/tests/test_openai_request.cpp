// Request validation without HTTP: JSON depth, field types and ranges (400 naming the param),
// prompt forms, the context check's message, chat rendering (thinking flags, tools, tool_choice
// prefill).
#include <string>

#include "api_error.hpp"
#include "catch.hpp"
#include "dsv4/chat_format.hpp"
#include "openai_request.hpp"

namespace chat = dsv4::chat;
using namespace dsv4::server;

namespace {

const dsv4::Tokenizer& tokenizer() {
  static const dsv4::Tokenizer tok = dsv4::Tokenizer::from_file(dsv4_test::source_dir() + "/data/tokenizer/tokenizer.json");
  return tok;
}

RequestLimits limits() {
  RequestLimits l;
  l.max_model_len = 4096;
  l.max_n = 8;
  l.vocab_size = static_cast<int32_t>(tokenizer().vocab_size());
  return l;
}

// The ApiError a body produces (status 0 when it is accepted).
ApiError error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "accepted");
}

ApiError completion_error(const std::string& body) {
  return error_of([&] { (void)parse_completion_request(parse_body(body), tokenizer(), limits()); });
}
ApiError chat_error(const std::string& body) {
  return error_of([&] { (void)parse_chat_request(parse_body(body), tokenizer(), limits()); });
}

const std::string kMsgs = R"("messages": [{"role": "user", "content": "Hi"}])";

}  // namespace

TEST_CASE("JSON syntax and nesting", "[openai_request]") {
  CHECK(error_of([] { (void)parse_body("{\"a\": "); }).status() == 400);
  CHECK(error_of([] { (void)parse_body("[1, 2]"); }).status() == 400);
  CHECK(error_of([] { (void)parse_body("{\"a\": \"\xff\"}"); }).status() == 400);
  auto nested = [](int depth) {  // an object holding depth − 1 nested arrays
    return "{\"x\": " + std::string(static_cast<size_t>(depth - 1), '[') + std::string(static_cast<size_t>(depth - 1), ']') + "}";
  };
  CHECK(error_of([&] { (void)parse_body(nested(64)); }).status() == 0);
  const ApiError deep = error_of([&] { (void)parse_body(nested(65)); });
  CHECK(deep.status() == 400);
  CHECK(std::string(deep.what()).find("64") != std::string::npos);
}

TEST_CASE("types and ranges name the param", "[openai_request]") {
  const ApiError t = completion_error(R"({"prompt": "a", "temperature": 3})");
  CHECK(t.status() == 400);
  CHECK(t.param() == "temperature");
  CHECK(completion_error(R"({"prompt": "a", "temperature": "hot"})").param() == "temperature");
  CHECK(completion_error(R"({"prompt": "a", "top_p": 0})").param() == "top_p");
  CHECK(completion_error(R"({"prompt": "a", "top_k": -2})").param() == "top_k");
  CHECK(completion_error(R"({"prompt": "a", "top_k": -1})").status() == 0);
  CHECK(completion_error(R"({"prompt": "a", "n": 9})").param() == "n");
  CHECK(completion_error(R"({"prompt": "a", "max_tokens": 0})").param() == "max_tokens");
  CHECK(completion_error(R"({"prompt": "a", "max_tokens": 2.5})").param() == "max_tokens");
  CHECK(completion_error(R"({"prompt": "a", "max_tokens": 4.0})").status() == 0);
  CHECK(completion_error(R"({"prompt": "a", "logit_bias": {"abc": 1}})").param() == "logit_bias");
  CHECK(completion_error(R"({"prompt": "a", "logit_bias": {"5": 101}})").param() == "logit_bias");
  CHECK(completion_error(R"({"prompt": "a", "logit_bias": {"5": -100}})").status() == 0);
  CHECK(completion_error(R"({"prompt": "a", "stop": 5})").param() == "stop");
  CHECK(completion_error(R"({"prompt": "a", "stop": [""]})").param() == "stop");
  CHECK(completion_error(R"({"prompt": "a", "stream_options": {"include_usage": true}})").param() == "stream_options");
  CHECK(completion_error(R"({"prompt": "a", "logprobs": 21})").param() == "logprobs");
  CHECK(completion_error(R"({"prompt": "a", "stop_token_ids": [-1]})").param() == "stop_token_ids");
  CHECK(completion_error(R"({"prompt": [1, "a"]})").param() == "prompt");
  CHECK(completion_error(R"({"prompt": []})").param() == "prompt");
  CHECK(completion_error(R"({"temperature": 1})").param() == "prompt");
  CHECK(chat_error(R"({"messages": []})").param() == "messages");
  CHECK(chat_error(R"({"messages": [{"content": "x"}]})").param() == "messages[0].role");
  CHECK(chat_error(R"({)" + kMsgs + R"(, "top_logprobs": 2})").param() == "top_logprobs");
  CHECK(chat_error(R"({)" + kMsgs + R"(, "reasoning_effort": "extreme"})").param() == "reasoning_effort");
  CHECK(chat_error(R"({)" + kMsgs + R"(, "tool_choice": "required"})").param() == "tool_choice");
  CHECK(chat_error(R"({"messages": [{"role": "wizard", "content": "x"}]})").param() == "messages");
  // Members compared as strings but given another type are 400s naming the field, not internal
  // errors (found by tests/fuzz/fuzz_server_request).
  const std::string tools =
      R"(, "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}])";
  CHECK(chat_error(R"({)" + kMsgs + tools + R"(, "tool_choice": {"type": {"name": "get"}}})").param() == "tool_choice");
  CHECK(chat_error(R"({)" + kMsgs + R"(, "tools": [{"type": 7, "function": {"name": "get"}}]})").status() == 400);
  CHECK(chat_error(R"({"messages": [{"role": "user", "content": [{"type": [], "text": "x"}]}]})").status() == 400);
  CHECK(chat_error(R"({"messages": [{"role": {}, "content": "x"}]})").status() == 400);
  CHECK(chat_error(R"({)" + kMsgs + R"(, "response_format": {"type": 1}})").status() == 400);
}

TEST_CASE("sampling and stop fields map onto RequestParams", "[openai_request]") {
  const auto r = parse_completion_request(
      parse_body(R"({"prompt": "Hello", "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1, "seed": 7, "n": 3,
                     "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
                     "logit_bias": {"100": 5.5}, "stop": ["a", "bc"], "stop_token_ids": [1, 2], "ignore_eos": true,
                     "max_tokens": 12, "logprobs": 3, "stream": true, "stream_options": {"include_usage": true}})"),
      tokenizer(), limits());
  const auto& p = r.params;
  CHECK(p.sampling.temperature == Approx(0.5));
  CHECK(p.sampling.top_p == Approx(0.9));
  CHECK(p.sampling.top_k == 40);
  CHECK(p.sampling.min_p == Approx(0.1));
  CHECK(p.sampling.seed == 7);
  CHECK(p.n == 3);
  CHECK(p.sampling.presence_penalty == Approx(0.5));
  CHECK(p.sampling.frequency_penalty == Approx(-0.5));
  CHECK(p.sampling.repetition_penalty == Approx(1.1));
  REQUIRE(p.sampling.logit_bias.size() == 1);
  CHECK(p.sampling.logit_bias[0].first == 100);
  CHECK(p.stop.stop_strings == std::vector<std::string>{"a", "bc"});
  CHECK(p.stop.stop_token_ids == std::vector<int32_t>{1, 2});
  CHECK(!p.stop.stop_on_eos);
  CHECK(p.stop.max_tokens == 12);
  CHECK(p.sampling.logprobs == 3);
  CHECK(r.stream);
  CHECK(r.include_usage);
  REQUIRE(r.prompts.size() == 1);
  CHECK(r.prompts[0][0] == tokenizer().bos_id());
}

TEST_CASE("prompt forms: text, ids, lists of either", "[openai_request]") {
  auto prompts = [](const std::string& p) {
    return parse_completion_request(parse_body(R"({"prompt": )" + p + "}"), tokenizer(), limits()).prompts;
  };
  CHECK(prompts(R"("a")").size() == 1);
  CHECK(prompts(R"([5, 6, 7])") == std::vector<std::vector<int32_t>>{{5, 6, 7}});
  CHECK(prompts(R"(["a", "b", "c"])").size() == 3);
  CHECK(prompts(R"([[1, 2], [3]])") == std::vector<std::vector<int32_t>>{{1, 2}, {3}});
  // Completions default to 16 tokens (vLLM / OpenAI), chat to what the context leaves.
  CHECK(parse_completion_request(parse_body(R"({"prompt": "a"})"), tokenizer(), limits()).params.stop.max_tokens == 16);
  const auto c = parse_chat_request(parse_body("{" + kMsgs + "}"), tokenizer(), limits());
  CHECK(c.params.stop.max_tokens == 4096 - static_cast<int>(c.prompt.size()));
}

TEST_CASE("the context check speaks vLLM's message", "[openai_request]") {
  const ApiError e = completion_error(R"({"prompt": "Hello", "max_tokens": 5000})");
  CHECK(e.status() == 400);
  CHECK(std::string(e.what()).find("This model's maximum context length is 4096 tokens. However, you requested") == 0);
  RequestLimits l = limits();
  l.max_tokens_limit = 100;
  const ApiError cap = error_of([&] {
    (void)parse_completion_request(parse_body(R"({"prompt": "a", "max_tokens": 101})"), tokenizer(), l);
  });
  CHECK(cap.status() == 400);
  CHECK(cap.param() == "max_tokens");
}

TEST_CASE("chat: thinking flags, tools and tool_choice enforcement", "[openai_request]") {
  auto req = [](const std::string& extra) {
    return parse_chat_request(parse_body("{" + kMsgs + extra + "}"), tokenizer(), limits());
  };
  const std::string eot(chat::kThinkEnd), think(chat::kThinkStart), d(chat::kDsml), assistant(chat::kAssistant);
  auto ends_with = [](const std::string& s, const std::string& t) { return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0; };

  CHECK(req("").mode == chat::ThinkingMode::chat);
  CHECK(ends_with(req("").prompt_text, assistant + eot));
  CHECK(req(R"(, "chat_template_kwargs": {"thinking": true})").mode == chat::ThinkingMode::thinking);
  CHECK(ends_with(req(R"(, "thinking": true)").prompt_text, assistant + think));
  CHECK(req(R"(, "reasoning_effort": "max")").mode == chat::ThinkingMode::thinking);
  CHECK(req(R"(, "reasoning_effort": "max")").prompt_text.find("Reasoning Effort: Absolute maximum") != std::string::npos);
  CHECK(req(R"(, "reasoning_effort": "high", "thinking": false)").mode == chat::ThinkingMode::chat);

  const std::string tools = R"(, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])";
  const auto a = req(tools);
  CHECK(a.tool_choice == ToolChoice::automatic);
  CHECK(a.prompt_text.find("## Tools") != std::string::npos);
  CHECK(a.prefill.empty());
  const auto none = req(tools + R"(, "tool_choice": "none")");
  CHECK(none.tool_choice == ToolChoice::none);
  CHECK(none.prompt_text.find("## Tools") == std::string::npos);
  const auto reqd = req(tools + R"(, "tool_choice": "required")");
  CHECK(reqd.prefill == "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"");
  CHECK(ends_with(reqd.prompt_text, assistant + eot + reqd.prefill));
  const auto named = req(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "thinking": true)");
  CHECK(named.tool_choice == ToolChoice::named);
  CHECK(named.prefill == eot + "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"get_weather\">\n");
  CHECK(chat_error("{" + kMsgs + tools + R"(, "tool_choice": {"type": "function", "function": {"name": "nope"}}})").param() ==
        "tool_choice");
  // Content-part lists are flattened; assistant tool-call arguments given as objects are accepted.
  CHECK(parse_chat_request(parse_body(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})"),
                           tokenizer(), limits()).prompt_text == req("").prompt_text);
  CHECK(chat_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})")
            .param() == "messages[0].content");
  CHECK(chat_error(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "r"}]})").status() == 0);
}
