// Request validation (contract in openai_request.hpp). Messages name the field the way OpenAI's
// "param" does ("temperature", "messages[2].content", "tool_choice.function.name").
#include "openai_request.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "api_error.hpp"
#include "dsv4/error.hpp"

namespace dsv4::server {
namespace {

constexpr int kMaxStops = 16;
constexpr size_t kMaxStopBytes = 4096;   // StopMatcher's limit
constexpr int kMaxStopTokenIds = 256;
constexpr size_t kMaxLogitBias = 4096;
constexpr int kMaxLogprobs = 20;         // SamplerParams::logprobs bound
constexpr int kDefaultCompletionMaxTokens = 16;

// A string member compared against a fixed set ("type", "role"): `def` when absent or null; a
// value no valid string equals when `o` is not an object or the member is not a string.
// (json::value(key, def) throws type_error for those: a client's {"type": {}} must be a 400 naming
// the field, found by tests/fuzz/fuzz_server_request.)
std::string str_member(const Json& o, const char* key, const char* def) {
  if (!o.is_object()) return "\x01(not an object)";
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  return it->is_string() ? it->get<std::string>() : std::string("\x01(not a string)");
}

// The value of `key`, or nullptr when absent or JSON null (OpenAI treats both as "not given").
const Json* field(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string show(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

double number(const Json& body, const char* key, double def, double lo, double hi, bool lo_open = false) {
  const Json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number()) bad_param(key, fmt::format("'{}' must be a number, got {}", key, show(*v)));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
    bad_param(key, fmt::format("'{}' must be in {}{}, {}], got {}", key, lo_open ? "(" : "[", lo, hi, show(*v)));
  return x;
}

// Integers: JSON integers, or floats with an integral value (some clients send 5.0).
std::optional<int64_t> integer(const Json& body, const char* key, int64_t lo, int64_t hi) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad_param(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, show(*v)));
    x = static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::isfinite(v->get<double>()) && std::floor(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e15) {
    x = static_cast<int64_t>(v->get<double>());
  } else {
    bad_param(key, fmt::format("'{}' must be an integer, got {}", key, show(*v)));
  }
  if (x < lo || x > hi) bad_param(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
  return x;
}

bool boolean(const Json& body, const char* key, bool def) {
  const Json* v = field(body, key);
  if (!v) return def;
  if (!v->is_boolean()) bad_param(key, fmt::format("'{}' must be true or false, got {}", key, show(*v)));
  return v->get<bool>();
}

int32_t token_id(const Json& v, const std::string& param, int32_t vocab) {
  if (!v.is_number_integer()) bad_param(param, fmt::format("'{}' must hold token ids (integers), got {}", param, show(v)));
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id >= vocab) bad_param(param, fmt::format("'{}': token id {} is outside the vocabulary [0, {})", param, id, vocab));
  return static_cast<int32_t>(id);
}

// Fields both endpoints share: sampling, stops, n, streaming. max_tokens is resolved by the caller
// once the prompt length is known.
struct Common {
  RequestParams params;
  std::optional<int64_t> max_tokens;
  bool stream = false, include_usage = false;
};

Common parse_common(const Json& body, const RequestLimits& lim, const char* max_tokens_key) {
  Common c;
  SamplerParams& sp = c.params.sampling;
  StopParams& st = c.params.stop;
  sp.temperature = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  sp.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0, /*lo_open=*/true));
  // vLLM: top_k −1 (or 0) disables it.
  const int64_t top_k = integer(body, "top_k", -1, std::numeric_limits<int32_t>::max()).value_or(-1);
  sp.top_k = top_k <= 0 ? 0 : static_cast<int>(top_k);
  sp.min_p = static_cast<float>(number(body, "min_p", 0.0, 0.0, 1.0));
  sp.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  sp.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  sp.repetition_penalty = static_cast<float>(number(body, "repetition_penalty", 1.0, 0.0, 100.0, /*lo_open=*/true));
  if (auto seed = integer(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    sp.seed = static_cast<uint64_t>(*seed);
  } else {
    // No seed: a fresh one per request, as OpenAI / vLLM sample (greedy requests do not care).
    std::random_device rd;
    sp.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  if (const Json* lb = field(body, "logit_bias")) {
    if (!lb->is_object()) bad_param("logit_bias", "'logit_bias' must be an object mapping token ids (as strings) to a bias");
    if (lb->size() > kMaxLogitBias) bad_param("logit_bias", fmt::format("'logit_bias' holds more than {} entries", kMaxLogitBias));
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      const std::string& k = it.key();
      int64_t id = -1;
      size_t pos = 0;
      try {
        id = std::stoll(k, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (k.empty() || pos != k.size() || id < 0 || id >= lim.vocab_size)
        bad_param("logit_bias", fmt::format("'logit_bias' key '{}' is not a token id in [0, {})", k, lim.vocab_size));
      if (!it.value().is_number() || !std::isfinite(it.value().get<double>()) || it.value().get<double>() < -100 ||
          it.value().get<double>() > 100)
        bad_param("logit_bias", fmt::format("'logit_bias' value for {} must be a number in [-100, 100], got {}", k, show(it.value())));
      sp.logit_bias.emplace_back(static_cast<int32_t>(id), it.value().get<float>());
    }
  }
  c.params.n = static_cast<int>(integer(body, "n", 1, lim.max_n).value_or(1));
  if (const Json* bo = field(body, "best_of")) {
    if (!bo->is_number_integer() || bo->get<int64_t>() != c.params.n)
      bad_param("best_of", "'best_of' other than n is not supported");
  }
  if (const Json* s = field(body, "stop")) {
    std::vector<std::string> stops;
    if (s->is_string()) {
      stops.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > static_cast<size_t>(kMaxStops)) bad_param("stop", fmt::format("'stop' holds more than {} strings", kMaxStops));
      for (const Json& x : *s) {
        if (!x.is_string()) bad_param("stop", fmt::format("'stop' must be a string or a list of strings, got {}", show(x)));
        stops.push_back(x.get<std::string>());
      }
    } else {
      bad_param("stop", fmt::format("'stop' must be a string or a list of strings, got {}", show(*s)));
    }
    for (const std::string& x : stops) {
      if (x.empty()) bad_param("stop", "'stop' strings must not be empty");
      if (x.size() > kMaxStopBytes) bad_param("stop", fmt::format("a 'stop' string is longer than {} bytes", kMaxStopBytes));
    }
    st.stop_strings = std::move(stops);
  }
  if (const Json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) bad_param("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    if (ids->size() > static_cast<size_t>(kMaxStopTokenIds))
      bad_param("stop_token_ids", fmt::format("'stop_token_ids' holds more than {} ids", kMaxStopTokenIds));
    for (const Json& x : *ids) st.stop_token_ids.push_back(token_id(x, "stop_token_ids", lim.vocab_size));
  }
  st.stop_on_eos = !boolean(body, "ignore_eos", false);
  // Chat: max_completion_tokens supersedes the deprecated max_tokens (either may be given).
  const std::optional<int64_t> a = integer(body, max_tokens_key, 1, std::numeric_limits<int32_t>::max());
  const std::optional<int64_t> b = std::string_view(max_tokens_key) == "max_completion_tokens"
                                       ? integer(body, "max_tokens", 1, std::numeric_limits<int32_t>::max())
                                       : std::nullopt;
  c.max_tokens = a ? a : b;
  c.stream = boolean(body, "stream", false);
  if (const Json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad_param("stream_options", "'stream_options' must be an object");
    if (!c.stream) bad_param("stream_options", "'stream_options' may only be given with \"stream\": true");
    c.include_usage = boolean(*so, "include_usage", false);
    (void)boolean(*so, "continuous_usage_stats", false);  // accepted (vLLM); usage comes at the end
  }
  if (const Json* u = field(body, "user"); u && !u->is_string()) bad_param("user", "'user' must be a string");
  return c;
}

// Content of a message as the encoder needs it: strings stay, OpenAI content-part lists are
// flattened (text parts joined by newlines, as vLLM does); other part types are refused.
void flatten_content(Json& m, const std::string& where) {
  auto it = m.find("content");
  if (it == m.end() || !it->is_array()) return;
  std::string text;
  bool first = true;
  for (const Json& part : *it) {
    if (part.is_string()) {
      text += (first ? "" : "\n") + part.get<std::string>();
    } else if (part.is_object() && str_member(part, "type", "") == "text" && part.contains("text") && part["text"].is_string()) {
      text += (first ? "" : "\n") + part["text"].get<std::string>();
    } else {
      bad_param(where + ".content", fmt::format("'{}.content': only text parts are supported, got {}", where, show(part)));
    }
    first = false;
  }
  *it = text;
}

std::string context_message(int64_t max_len, int64_t prompt, std::optional<int64_t> completion, std::string_view what) {
  if (!completion)
    return fmt::format("This model's maximum context length is {} tokens. However, your request has {} input tokens. "
                       "Please reduce the length of the input {}.",
                       max_len, prompt, what);
  return fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the {}, "
                     "{} in the completion). Please reduce the length of the {} or completion.",
                     max_len, prompt + *completion, prompt, what, *completion, what);
}

struct RenderedChat {
  std::string text;
  chat::ThinkingMode mode = chat::ThinkingMode::chat;
  ToolChoice tool_choice = ToolChoice::none;
  std::string forced;
  bool parallel = true;
  std::string prefill;
};

// messages + tools + mode fields → the prompt string (encode_messages) plus the assistant-turn
// prefill that enforces tool_choice required / named.
RenderedChat render_chat(const Json& body) {
  RenderedChat r;
  const Json* msgs = field(body, "messages");
  if (!msgs) bad_param("messages", "'messages' is required");
  if (!msgs->is_array() || msgs->empty()) bad_param("messages", "'messages' must be a non-empty list of messages");
  Json messages = *msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    Json& m = messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad_param(where, fmt::format("'{}' must be an object", where));
    if (!m.contains("role") || !m["role"].is_string()) bad_param(where + ".role", fmt::format("'{}.role' must be a string", where));
    const std::string role = m["role"].get<std::string>();
    if (role != "tool") flatten_content(m, where);
    if (m.contains("content") && !m["content"].is_null() && !m["content"].is_string() && role != "tool")
      bad_param(where + ".content", fmt::format("'{}.content' must be a string or a list of text parts", where));
    // Tool-call arguments the client sent as objects are re-serialised to the JSON string the
    // encoder expects (the release encoder would render an object as one opaque parameter).
    if (auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
      if (!tc->is_array()) bad_param(where + ".tool_calls", fmt::format("'{}.tool_calls' must be a list", where));
      for (Json& call : *tc) {
        if (!call.is_object() || !call.contains("function") || !call["function"].is_object())
          bad_param(where + ".tool_calls", fmt::format("'{}.tool_calls' entries need a \"function\" object", where));
        Json& fn = call["function"];
        if (!fn.contains("name") || !fn["name"].is_string())
          bad_param(where + ".tool_calls", fmt::format("'{}.tool_calls': function.name must be a string", where));
        if (fn.contains("arguments") && fn["arguments"].is_object()) fn["arguments"] = chat::py_json_dumps(fn["arguments"]);
        if (!fn.contains("arguments") || fn["arguments"].is_null()) fn["arguments"] = "{}";
        if (!fn["arguments"].is_string())
          bad_param(where + ".tool_calls", fmt::format("'{}.tool_calls': function.arguments must be a JSON string", where));
      }
    }
  }

  // Thinking mode: chat_template_kwargs.thinking / enable_thinking (vLLM), or a top-level
  // "thinking"; a reasoning_effort without either flag asks for reasoning too. Default: chat.
  std::optional<bool> thinking;
  if (const Json* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) bad_param("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    for (const char* k : {"thinking", "enable_thinking"})
      if (const Json* v = field(*kw, k)) {
        if (!v->is_boolean()) bad_param(std::string("chat_template_kwargs.") + k, fmt::format("'chat_template_kwargs.{}' must be true or false", k));
        thinking = v->get<bool>();
      }
  }
  if (const Json* v = field(body, "thinking")) {
    if (v->is_boolean()) {
      thinking = v->get<bool>();
    } else if (v->is_object() && v->contains("type") && (*v)["type"].is_string()) {  // {"type": "enabled"|"disabled"}
      const std::string t = (*v)["type"].get<std::string>();
      if (t != "enabled" && t != "disabled") bad_param("thinking", "'thinking.type' must be \"enabled\" or \"disabled\"");
      thinking = t == "enabled";
    } else {
      bad_param("thinking", fmt::format("'thinking' must be true or false, got {}", show(*v)));
    }
  }
  chat::EncodeOptions eo;
  if (const Json* e = field(body, "reasoning_effort")) {
    if (!e->is_string() || (e->get<std::string>() != "high" && e->get<std::string>() != "max"))
      bad_param("reasoning_effort", fmt::format("'reasoning_effort' must be \"high\" or \"max\", got {}", show(*e)));
    eo.reasoning_effort = e->get<std::string>();
    if (!thinking) thinking = true;
  }
  r.mode = thinking.value_or(false) ? chat::ThinkingMode::thinking : chat::ThinkingMode::chat;

  // Tools and tool_choice.
  std::vector<std::string> names;
  const Json* tools = field(body, "tools");
  if (tools) {
    if (!tools->is_array()) bad_param("tools", "'tools' must be a list");
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& t = (*tools)[i];
      const std::string where = fmt::format("tools[{}]", i);
      if (!t.is_object() || str_member(t, "type", "function") != "function" || !t.contains("function") || !t["function"].is_object())
        bad_param(where, fmt::format("'{}' must be {{\"type\": \"function\", \"function\": {{...}}}}", where));
      const Json& fn = t["function"];
      if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
        bad_param(where + ".function.name", fmt::format("'{}.function.name' must be a non-empty string", where));
      names.push_back(fn["name"].get<std::string>());
    }
  }
  const bool have_tools = !names.empty();
  r.tool_choice = have_tools ? ToolChoice::automatic : ToolChoice::none;
  if (const Json* tc = field(body, "tool_choice")) {
    if (tc->is_string()) {
      const std::string s = tc->get<std::string>();
      if (s == "none") r.tool_choice = ToolChoice::none;
      else if (s == "auto") r.tool_choice = have_tools ? ToolChoice::automatic : ToolChoice::none;
      else if (s == "required") r.tool_choice = ToolChoice::required;
      else bad_param("tool_choice", fmt::format("'tool_choice' must be \"none\", \"auto\", \"required\" or a named function, got {}", show(*tc)));
    } else if (tc->is_object() && str_member(*tc, "type", "") == "function" && tc->contains("function") &&
               (*tc)["function"].is_object() && (*tc)["function"].contains("name") && (*tc)["function"]["name"].is_string()) {
      r.tool_choice = ToolChoice::named;
      r.forced = (*tc)["function"]["name"].get<std::string>();
      if (std::find(names.begin(), names.end(), r.forced) == names.end())
        bad_param("tool_choice", fmt::format("'tool_choice' names the function '{}', which is not in 'tools'", r.forced));
    } else {
      bad_param("tool_choice", fmt::format("'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                           "{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {}", show(*tc)));
    }
    if ((r.tool_choice == ToolChoice::required || r.tool_choice == ToolChoice::named) && !have_tools)
      bad_param("tool_choice", "'tool_choice' requires a tool call but 'tools' is empty");
  }
  r.parallel = boolean(body, "parallel_tool_calls", true);

  // Request-level tools (and a response_format schema) hang on the first system/developer message,
  // else on a new empty system message (spec §5.1, as vLLM / SGLang do). tool_choice "none":
  // tools are not rendered at all, so the model does not know it could call them.
  Json schema;
  if (const Json* rf = field(body, "response_format")) {
    const std::string type = rf->is_object() ? str_member(*rf, "type", "") : "";
    if (type == "json_schema" && rf->contains("json_schema")) schema = (*rf)["json_schema"];
    else if (type != "text") bad_param("response_format", "'response_format' must be {\"type\": \"text\"} or {\"type\": \"json_schema\", ...}");
  }
  const bool render_tools = have_tools && r.tool_choice != ToolChoice::none;
  if (render_tools || !schema.is_null()) {
    const bool first_is_system = str_member(messages[0], "role", "") == "system" || str_member(messages[0], "role", "") == "developer";
    if (!first_is_system) messages.insert(messages.begin(), Json{{"role", "system"}, {"content", ""}});
    Json& sys = messages[0];
    if (render_tools) {
      if (sys.contains("tools") && !sys["tools"].is_null() && !sys["tools"].empty())
        bad_param("tools", "'tools' given both in the request and on messages[0]; give them in one place");
      sys["tools"] = *tools;
    }
    if (!schema.is_null()) sys["response_format"] = schema;
  }
  try {
    r.text = chat::encode_messages(messages, r.mode, eo);
  } catch (const dsv4::Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type deep inside
    throw ApiError(400, fmt::format("'messages' holds a value of the wrong type: {}", e.what()), "messages", "invalid_value");
  }

  // Enforcement: the assistant turn is prefilled with the DSML opening the release itself renders
  // for a tool-call turn (spec §5.2): "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"" and, for a
  // named function, its name and the header's end. In thinking mode the prefill first closes the
  // (empty) reasoning: the forced call comes without reasoning.
  if (r.tool_choice == ToolChoice::required || r.tool_choice == ToolChoice::named) {
    const std::string d(chat::kDsml);
    if (r.mode == chat::ThinkingMode::thinking) r.prefill = std::string(chat::kThinkEnd);
    r.prefill += "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"";
    if (r.tool_choice == ToolChoice::named) r.prefill += r.forced + "\">\n";
  }
  return r;
}

}  // namespace

Json parse_body(std::string_view body) {
  const Json::parser_callback_t limit = [](int depth, Json::parse_event_t event, Json&) {
    // The callback sees a container open at its parent's depth: a document nested N deep opens
    // its innermost container at depth N − 1.
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxJsonNesting)
      throw ApiError(400, fmt::format("The request body is nested deeper than {} levels", kMaxJsonNesting), {},
                     "invalid_json");
    return true;
  };
  Json j;
  try {
    j = Json::parse(body.begin(), body.end(), limit);
  } catch (const nlohmann::json::exception& e) {
    throw ApiError(400, fmt::format("The request body is not valid JSON: {}", e.what()), {}, "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "The request body must be a JSON object", {}, "invalid_json");
  return j;
}

std::string requested_model(const Json& body) {
  const Json* m = field(body, "model");
  if (!m) return {};
  if (!m->is_string()) bad_param("model", "'model' must be a string");
  return m->get<std::string>();
}

int resolve_max_tokens(std::optional<int64_t> requested, int64_t prompt_len, const RequestLimits& lim,
                       std::string_view what) {
  if (prompt_len >= lim.max_model_len)
    throw ApiError(400, context_message(lim.max_model_len, prompt_len, requested, what), std::string(what),
                   "context_length_exceeded");
  if (requested) {
    if (lim.max_tokens_limit > 0 && *requested > lim.max_tokens_limit)
      bad_param("max_tokens", fmt::format("'max_tokens' {} exceeds this server's limit of {} (--max-tokens-limit)",
                                          *requested, lim.max_tokens_limit));
    if (prompt_len + *requested > lim.max_model_len)
      throw ApiError(400, context_message(lim.max_model_len, prompt_len, requested, what), "max_tokens",
                     "context_length_exceeded");
    return static_cast<int>(*requested);
  }
  int64_t left = lim.max_model_len - prompt_len;
  if (lim.max_tokens_limit > 0) left = std::min<int64_t>(left, lim.max_tokens_limit);
  return static_cast<int>(std::min<int64_t>(left, std::numeric_limits<int32_t>::max()));
}

CompletionRequest parse_completion_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim) {
  CompletionRequest r;
  Common c = parse_common(body, lim, "max_tokens");
  if (!c.max_tokens)  // vLLM's (and OpenAI's) default for completions: 16
    c.max_tokens = lim.max_tokens_limit > 0 ? std::min(kDefaultCompletionMaxTokens, lim.max_tokens_limit)
                                            : kDefaultCompletionMaxTokens;
  r.params = c.params;
  r.stream = c.stream;
  r.include_usage = c.include_usage;
  r.echo = boolean(body, "echo", false);
  if (const Json* lp = field(body, "logprobs")) {
    if (lp->is_boolean()) bad_param("logprobs", "'logprobs' must be an integer (the number of alternatives) for completions");
    r.logprobs = static_cast<int>(*integer(body, "logprobs", 0, kMaxLogprobs));
  }
  if (const Json* sfx = field(body, "suffix"); sfx && !(sfx->is_string() && sfx->get<std::string>().empty()))
    bad_param("suffix", "'suffix' is not supported");

  const int32_t id_bound = std::min<int32_t>(lim.vocab_size, static_cast<int32_t>(tok.vocab_size()));
  const Json* p = field(body, "prompt");
  if (!p) bad_param("prompt", "'prompt' is required");
  auto text_prompt = [&](const std::string& s) {
    std::vector<int32_t> ids;
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());  // as HF's add_bos_token (DeepSeek: true)
    try {
      const auto t = tok.encode(s);
      ids.insert(ids.end(), t.begin(), t.end());
    } catch (const dsv4::Error& e) {
      throw ApiError(400, e.what(), "prompt", "invalid_value");
    }
    r.prompts.push_back(std::move(ids));
    r.prompt_texts.push_back(s);
  };
  auto id_prompt = [&](const Json& arr) {
    if (arr.empty()) bad_param("prompt", "'prompt' token lists must not be empty");
    std::vector<int32_t> ids;
    for (const Json& x : arr) ids.push_back(token_id(x, "prompt", id_bound));
    r.prompt_texts.push_back(tok.decode(ids));
    r.prompts.push_back(std::move(ids));
  };
  if (p->is_string()) {
    text_prompt(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) bad_param("prompt", "'prompt' must not be an empty list");
    if ((*p)[0].is_number_integer()) {
      id_prompt(*p);
    } else {
      if (p->size() > static_cast<size_t>(lim.max_prompts))
        bad_param("prompt", fmt::format("'prompt' holds more than {} prompts", lim.max_prompts));
      for (const Json& x : *p) {
        if (x.is_string()) text_prompt(x.get<std::string>());
        else if (x.is_array()) id_prompt(x);
        else bad_param("prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists");
      }
    }
  } else {
    bad_param("prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists");
  }
  size_t longest = 0;
  for (const auto& ids : r.prompts) longest = std::max(longest, ids.size());
  r.params.stop.max_tokens = resolve_max_tokens(c.max_tokens, static_cast<int64_t>(longest), lim, "prompt");
  r.params.sampling.logprobs = r.logprobs;
  return r;
}

ChatPipeline::Options ChatRequest::pipeline_options() const {
  ChatPipeline::Options o;
  o.mode = mode;
  o.prefill = prefill;
  o.tools_enabled = tool_choice != ToolChoice::none;
  o.max_tool_calls = parallel_tool_calls ? -1 : 1;
  return o;
}

ChatRequest parse_chat_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim) {
  ChatRequest r;
  Common c = parse_common(body, lim, "max_completion_tokens");
  r.params = c.params;
  r.stream = c.stream;
  r.include_usage = c.include_usage;
  r.logprobs = boolean(body, "logprobs", false);
  if (auto tl = integer(body, "top_logprobs", 0, kMaxLogprobs)) {
    if (!r.logprobs) bad_param("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
    r.top_logprobs = static_cast<int>(*tl);
  }
  r.params.sampling.logprobs = r.logprobs ? r.top_logprobs : -1;

  RenderedChat rc = render_chat(body);
  r.mode = rc.mode;
  r.tool_choice = rc.tool_choice;
  r.forced_function = rc.forced;
  r.parallel_tool_calls = rc.parallel;
  r.prefill = rc.prefill;
  r.prompt_text = rc.text + rc.prefill;
  try {
    r.prompt = tok.encode(r.prompt_text);  // the text starts with BOS already
  } catch (const dsv4::Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  }
  r.params.stop.max_tokens = resolve_max_tokens(c.max_tokens, static_cast<int64_t>(r.prompt.size()), lim, "messages");
  return r;
}

std::vector<int32_t> parse_tokenize_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim) {
  (void)lim;
  const Json* p = field(body, "prompt");
  const Json* m = field(body, "messages");
  if (!!p == !!m) bad_param(p ? "messages" : "prompt", "give exactly one of 'prompt' or 'messages'");
  if (p) {
    if (!p->is_string()) bad_param("prompt", "'prompt' must be a string");
    std::vector<int32_t> ids;
    if (boolean(body, "add_special_tokens", true) && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    try {
      const auto t = tok.encode(p->get<std::string>());
      ids.insert(ids.end(), t.begin(), t.end());
    } catch (const dsv4::Error& e) {
      throw ApiError(400, e.what(), "prompt", "invalid_value");
    }
    return ids;
  }
  const RenderedChat rc = render_chat(body);
  try {
    return tok.encode(rc.text + rc.prefill);
  } catch (const dsv4::Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  }
}

std::vector<int32_t> parse_detokenize_request(const Json& body, const Tokenizer& tok) {
  const Json* t = field(body, "tokens");
  if (!t || !t->is_array()) bad_param("tokens", "'tokens' must be a list of token ids");
  std::vector<int32_t> ids;
  for (const Json& x : *t) ids.push_back(token_id(x, "tokens", static_cast<int32_t>(tok.vocab_size())));
  return ids;
}

}  // namespace dsv4::server
