// Prompt encoding for DeepSeek-V4 (spec §3-§6): the release `encode_messages` reimplemented step
// by step — tool messages merged into user turns, tool results ordered by call, reasoning dropped
// before the last user turn, per-message rendering plus transitions. Inputs are never mutated;
// every rejection names the offending message ("messages[i]" / "context[i]") and what was expected.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "chat_internal.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"

namespace dsv4::chat {

using detail::py_str;
using detail::py_truthy;

ThinkingMode parse_thinking_mode(std::string_view s) {
  if (s == "chat") return ThinkingMode::chat;
  if (s == "thinking") return ThinkingMode::thinking;
  fail(Status::invalid_argument, "thinking_mode: expected \"chat\" or \"thinking\", got \"{}\"", s);
}

std::string_view to_string(ThinkingMode m) { return m == ThinkingMode::chat ? "chat" : "thinking"; }

Revision parse_revision(std::string_view s) {
  if (s == "original" || s.starts_with("60d8d707")) return Revision::original;
  if (s == "0731" || s.starts_with("7872f01b") || s.starts_with("9e165c30")) return Revision::r0731;
  fail(Status::invalid_argument, "revision: expected \"original\" or \"0731\", got \"{}\"", s);
}

namespace {

// UTF-8 of U+2014 EM DASH, used only in the 0731 "max" paragraph.
#define DSV4_EM_DASH "\xE2\x80\x94"

constexpr std::string_view kEffortAbsoluteMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

constexpr std::string_view kEffortBeyondMax =
    "Reasoning Effort: Beyond maximum " DSV4_EM_DASH " exhaustive, relentless, and uncompromising.\n"
    "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: exhaustively "
    "decompose the problem into its most fundamental components, trace every causal chain to its root, and "
    "resolve the underlying cause rather than any surface symptom.\n"
    "Do not stop reasoning until you have independently verified the solution from multiple angles and are "
    "certain that no assumption remains unchecked and no error remains undiscovered.\n\n";
#undef DSV4_EM_DASH

std::string dsml(std::string_view rest) { return std::string(kDsml) + std::string(rest); }

std::string tools_block(const std::string& schemas) {
  std::string t;
  t += "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by "
       "writing a \"<" + dsml("tool_calls") + ">\" block like the following:\n\n";
  t += "<" + dsml("tool_calls") + ">\n";
  t += "<" + dsml("invoke") + " name=\"$TOOL_NAME\">\n";
  t += "<" + dsml("parameter") + " name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" +
       dsml("parameter") + ">\n";
  t += "...\n</" + dsml("invoke") + ">\n";
  t += "<" + dsml("invoke") + " name=\"$TOOL_NAME2\">\n";
  t += "...\n</" + dsml("invoke") + ">\n";
  t += "</" + dsml("tool_calls") + ">\n\n";
  t += "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
       "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n";
  t += "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
       "<think>...</think> BEFORE any tool calls or final response.\n\n";
  t += "Otherwise, output directly after </think> with tool calls or final response.\n\n";
  t += "### Available Tool Schemas\n\n";
  t += schemas;
  t += "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
  return t;
}

const Json& null_json() {
  static const Json kNull;  // immutable
  return kNull;
}

// dict.get(key) of the release: missing key and non-object both read as None.
const Json& get(const Json& obj, const char* key) {
  if (!obj.is_object()) return null_json();
  auto it = obj.find(key);
  return it == obj.end() ? null_json() : *it;
}

bool role_is(const Json& msg, std::string_view r) {
  const Json& role = get(msg, "role");
  return role.is_string() && role.get_ref<const std::string&>() == r;
}

// One block of a merged user turn: user text or a tool result (spec §4.1).
struct Block {
  bool is_tool = false;
  Json content;      // text of a user message, or content of a tool message
  Json tool_use_id;  // tool messages: their tool_call_id ("" when missing)
  std::string origin;
};

// A message after pre-processing. `m` holds the fields the renderer reads; user turns carry
// their blocks separately. `origin` names the input message for error messages.
struct Msg {
  Json m;
  std::string origin;
  bool has_blocks = false;
  std::vector<Block> blocks;
};

std::string describe(const Msg& msg) {
  const Json& role = get(msg.m, "role");
  return role.is_string() ? msg.origin + " (" + role.get<std::string>() + ")" : msg.origin;
}

std::vector<Msg> merge_tool_messages(const Json& list, const char* label) {
  if (!list.is_array()) fail(Status::invalid_argument, "{}: expected an array of messages, got a JSON {}", label, list.type_name());
  std::vector<Msg> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& msg = list[i];
    std::string origin = fmt::format("{}[{}]", label, i);
    if (!msg.is_object()) fail(Status::invalid_argument, "{}: expected a message object, got a JSON {}", origin, msg.type_name());
    if (role_is(msg, "tool")) {
      Block b;
      b.is_tool = true;
      b.content = msg.contains("content") ? msg["content"] : Json("");
      b.tool_use_id = msg.contains("tool_call_id") ? msg["tool_call_id"] : Json("");
      b.origin = origin;
      if (!out.empty() && role_is(out.back().m, "user") && out.back().has_blocks) {
        out.back().blocks.push_back(std::move(b));
      } else {
        Msg u;
        u.m = Json{{"role", "user"}};
        u.origin = origin;
        u.has_blocks = true;
        u.blocks.push_back(std::move(b));
        out.push_back(std::move(u));
      }
    } else if (role_is(msg, "user")) {
      Block b;
      b.content = msg.contains("content") ? msg["content"] : Json("");
      b.origin = origin;
      // A user message joins the previous user turn unless that turn carries a task; it then
      // loses its own task / wo_eos (release behaviour).
      if (!out.empty() && role_is(out.back().m, "user") && out.back().has_blocks && get(out.back().m, "task").is_null()) {
        out.back().blocks.push_back(std::move(b));
      } else {
        Msg u;
        u.m = Json{{"role", "user"}, {"content", b.content}};
        for (const char* key : {"task", "wo_eos", "mask"})
          if (msg.contains(key)) u.m[key] = msg[key];
        u.origin = origin;
        u.has_blocks = true;
        u.blocks.push_back(std::move(b));
        out.push_back(std::move(u));
      }
    } else {
      out.push_back(Msg{msg, origin, false, {}});
    }
  }
  return out;
}

// Tool results inside one user turn follow the order of the calls of the latest assistant message
// with tool calls; unknown ids sort as call 0 (stable).
void sort_tool_results_by_call_order(std::vector<Msg>& msgs) {
  std::map<std::string, size_t> order;  // key: JSON text of the call id
  for (auto& msg : msgs) {
    const Json& calls = get(msg.m, "tool_calls");
    if (role_is(msg.m, "assistant") && py_truthy(calls)) {
      if (!calls.is_array()) fail(Status::invalid_argument, "{}: tool_calls must be an array, got a JSON {}", describe(msg), calls.type_name());
      order.clear();
      for (size_t k = 0; k < calls.size(); ++k) {
        const Json& tc = calls[k];
        if (!tc.is_object()) fail(Status::invalid_argument, "{}: tool_calls[{}] must be an object", describe(msg), k);
        Json id = get(tc, "id");
        if (!py_truthy(id)) {
          const Json& fn = get(tc, "function");
          if (tc.contains("function") && !fn.is_object())
            fail(Status::invalid_argument, "{}: tool_calls[{}].function must be an object", describe(msg), k);
          id = fn.contains("id") ? fn["id"] : Json("");
        }
        if (py_truthy(id)) order[py_json_dumps(id)] = k;
      }
    } else if (role_is(msg.m, "user") && msg.has_blocks) {
      size_t n_tool = 0;
      for (const auto& b : msg.blocks) n_tool += b.is_tool;
      if (n_tool <= 1 || order.empty()) continue;
      std::vector<Block> tool_blocks;
      for (const auto& b : msg.blocks)
        if (b.is_tool) tool_blocks.push_back(b);
      auto rank = [&](const Block& b) {
        auto it = order.find(py_json_dumps(b.tool_use_id));
        return it == order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(tool_blocks.begin(), tool_blocks.end(),
                       [&](const Block& a, const Block& b) { return rank(a) < rank(b); });
      size_t next = 0;
      for (auto& b : msg.blocks)
        if (b.is_tool) b = tool_blocks[next++];
    }
  }
}

long find_last_user_index(const std::vector<Msg>& msgs) {
  for (long i = static_cast<long>(msgs.size()) - 1; i >= 0; --i)
    if (role_is(msgs[i].m, "user") || role_is(msgs[i].m, "developer")) return i;
  return -1;
}

// Before the last user/developer turn: assistant messages lose their reasoning, developer (and any
// role outside user/system/tool/latest_reminder/direct_search_results) messages disappear.
std::vector<Msg> drop_thinking_messages(const std::vector<Msg>& msgs) {
  const long last_user = find_last_user_index(msgs);
  std::vector<Msg> out;
  for (long i = 0; i < static_cast<long>(msgs.size()); ++i) {
    const Msg& msg = msgs[i];
    const bool keep_role = role_is(msg.m, "user") || role_is(msg.m, "system") || role_is(msg.m, "tool") ||
                           role_is(msg.m, "latest_reminder") || role_is(msg.m, "direct_search_results");
    if (keep_role || i >= last_user) {
      out.push_back(msg);
    } else if (role_is(msg.m, "assistant")) {
      Msg copy = msg;
      copy.m.erase("reasoning_content");
      out.push_back(std::move(copy));
    }
  }
  return out;
}

struct RenderCtx {
  ThinkingMode mode;
  bool drop_thinking;  // effective flag
  const std::optional<std::string>& effort;
  Revision revision;
};

std::string_view effort_prefix(const RenderCtx& c) {
  const auto& e = c.effort;
  if (c.revision == Revision::original) {
    if (e && *e != "max" && *e != "high")
      fail(Status::invalid_argument, "reasoning_effort: expected null, \"high\" or \"max\" (original revision), got \"{}\"", *e);
    return e && *e == "max" ? kEffortAbsoluteMax : std::string_view();
  }
  if (e && *e != "max" && *e != "high" && *e != "low")
    fail(Status::invalid_argument, "reasoning_effort: expected null, \"low\", \"high\" or \"max\" (0731 revision), got \"{}\"", *e);
  if (e && *e == "max") return kEffortBeyondMax;
  if (e && *e == "high") return kEffortAbsoluteMax;
  return {};
}

// content / reasoning_content of system and assistant messages: `value or ""`.
std::string text_or_empty(const Json& v, const std::string& what) {
  return py_truthy(v) ? py_str(v, what) : std::string();
}

std::string render_tool_call(const Json& tc, const std::string& what) {
  if (!tc.is_object() || !get(tc, "function").is_object())
    fail(Status::invalid_argument, "{}: expected {{\"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}", what);
  const Json& fn = tc["function"];
  if (!fn.contains("name")) fail(Status::invalid_argument, "{}.function: missing \"name\"", what);
  if (!fn.contains("arguments")) fail(Status::invalid_argument, "{}.function: missing \"arguments\"", what);
  const std::string name = py_str(fn["name"], what + ".function.name");
  const Json& args = fn["arguments"];

  std::vector<detail::ArgMember> params;
  std::optional<detail::LoadedArguments> loaded;
  if (args.is_string()) loaded = detail::py_json_loads_arguments(args.get_ref<const std::string&>());
  if (loaded) {
    if (!loaded->is_object)
      fail(Status::invalid_argument, "{}.function.arguments: the JSON must be an object, got {}", what, args.get<std::string>());
    params = std::move(loaded->members);
  } else if (args.is_string()) {
    // Not valid JSON: the release passes the raw text as one string parameter named "arguments".
    params.push_back({"arguments", true, args.get<std::string>()});
  } else {
    // Already-decoded arguments: json.loads raises TypeError, the release renders them as one
    // non-string parameter "arguments" (spec §5.2).
    params.push_back({"arguments", false, py_json_dumps(args)});
  }
  std::string p;
  for (size_t i = 0; i < params.size(); ++i) {
    if (i) p += "\n";
    p += "<" + dsml("parameter") + " name=\"" + params[i].key + "\" string=\"" + (params[i].is_string ? "true" : "false") +
         "\">" + params[i].value + "</" + dsml("parameter") + ">";
  }
  return "<" + dsml("invoke") + " name=\"" + name + "\">\n" + p + "\n</" + dsml("invoke") + ">";
}

std::string render_user_blocks(const Msg& msg) {
  std::string out;
  for (size_t i = 0; i < msg.blocks.size(); ++i) {
    const Block& b = msg.blocks[i];
    if (i) out += "\n\n";
    if (!b.is_tool) {
      if (!b.content.is_string())
        fail(Status::invalid_argument, "{} (user): content must be a string, got a JSON {} (flatten content parts first)",
             b.origin, b.content.type_name());
      out += b.content.get_ref<const std::string&>();
      continue;
    }
    std::string text;
    if (b.content.is_array()) {
      for (size_t k = 0; k < b.content.size(); ++k) {
        const Json& part = b.content[k];
        const std::string what = fmt::format("{} (tool): content[{}]", b.origin, k);
        if (!part.is_object()) fail(Status::invalid_argument, "{}: expected a content part object", what);
        if (k) text += "\n\n";
        if (get(part, "type").is_string() && get(part, "type").get_ref<const std::string&>() == "text") {
          const Json& t = part.contains("text") ? part["text"] : Json("");
          if (!t.is_string()) fail(Status::invalid_argument, "{}.text: expected a string", what);
          text += t.get_ref<const std::string&>();
        } else {
          text += "[Unsupported " + py_str(get(part, "type"), what + ".type") + "]";
        }
      }
    } else {
      text = py_str(b.content, b.origin + " (tool): content");
    }
    out += "<tool_result>" + text + "</tool_result>";
  }
  return out;
}

std::string render_message(size_t index, const std::vector<Msg>& msgs, const RenderCtx& c) {
  const Msg& msg = msgs[index];
  const Json& m = msg.m;
  const long last_user = find_last_user_index(msgs);
  const bool thinking = c.mode == ThinkingMode::thinking;
  const std::string who = describe(msg);
  std::string prompt;

  const std::string_view prefix = effort_prefix(c);  // validated on every rendered message, as the release does
  if (index == 0 && thinking) prompt += prefix;

  const Json& role = get(m, "role");
  const std::string r = role.is_string() ? role.get<std::string>() : std::string();
  auto system_like_tail = [&](std::string& out) {
    const Json& tools = get(m, "tools");
    if (py_truthy(tools)) {
      if (!tools.is_array()) fail(Status::invalid_argument, "{}: tools must be an array", who);
      std::string schemas;
      for (size_t k = 0; k < tools.size(); ++k) {
        if (!tools[k].is_object() || !tools[k].contains("function"))
          fail(Status::invalid_argument, "{}: tools[{}] must be {{\"type\": \"function\", \"function\": {{...}}}}", who, k);
        if (k) schemas += "\n";
        schemas += py_json_dumps(tools[k]["function"]);
      }
      out += "\n\n" + tools_block(schemas);
    }
    const Json& rf = get(m, "response_format");
    if (py_truthy(rf))
      out += "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" + py_json_dumps(rf);
  };

  if (r == "system") {
    prompt += text_or_empty(get(m, "content"), who + ": content");
    system_like_tail(prompt);
  } else if (r == "developer") {
    const Json& content = get(m, "content");
    if (!py_truthy(content)) fail(Status::invalid_argument, "{}: content must be a non-empty string", who);
    if (!content.is_string()) fail(Status::invalid_argument, "{}: content must be a string, got a JSON {}", who, content.type_name());
    prompt += std::string(kUser) + content.get<std::string>();
    system_like_tail(prompt);
  } else if (r == "user") {
    prompt += kUser;
    if (msg.has_blocks) {
      prompt += render_user_blocks(msg);
    } else {
      prompt += text_or_empty(get(m, "content"), who + ": content");
    }
  } else if (r == "latest_reminder") {
    prompt += std::string(kLatestReminder) + py_str(get(m, "content"), who + ": content");
  } else if (r == "assistant") {
    std::string tc_content;
    const Json& calls = get(m, "tool_calls");
    if (py_truthy(calls)) {
      if (!calls.is_array()) fail(Status::invalid_argument, "{}: tool_calls must be an array", who);
      std::string invokes;
      for (size_t k = 0; k < calls.size(); ++k) {
        if (k) invokes += "\n";
        invokes += render_tool_call(calls[k], fmt::format("{}: tool_calls[{}]", who, k));
      }
      tc_content = "\n\n<" + dsml("tool_calls") + ">\n" + invokes + "\n</" + dsml("tool_calls") + ">";
    }
    const std::string content = text_or_empty(get(m, "content"), who + ": content");
    const std::string reasoning = text_or_empty(get(m, "reasoning_content"), who + ": reasoning_content");
    // An assistant message answering a task (title, action, ...) has no reasoning part.
    const bool prev_has_task = index > 0 && !get(msgs[index - 1].m, "task").is_null();
    std::string thinking_part;
    if (thinking && !prev_has_task && (!c.drop_thinking || static_cast<long>(index) > last_user))
      thinking_part = reasoning + std::string(kThinkEnd);
    prompt += thinking_part + content + tc_content;
    if (!py_truthy(get(m, "wo_eos"))) prompt += kEos;
  } else {
    fail(Status::invalid_argument,
         "{}: unknown role {} (expected system, developer, user, assistant, tool or latest_reminder)", msg.origin,
         role.is_null() ? std::string("(missing)") : role.dump());
  }

  // Transition: only before an assistant / latest_reminder message or at the end.
  if (index + 1 < msgs.size() && !role_is(msgs[index + 1].m, "assistant") && !role_is(msgs[index + 1].m, "latest_reminder"))
    return prompt;

  const Json& task = get(m, "task");
  if (!task.is_null()) {
    static constexpr std::pair<std::string_view, std::string_view> kTasks[] = {
        {"action", "<\xEF\xBD\x9C" "action\xEF\xBD\x9C>"},   {"query", "<\xEF\xBD\x9Cquery\xEF\xBD\x9C>"},
        {"authority", "<\xEF\xBD\x9C" "authority\xEF\xBD\x9C>"}, {"domain", "<\xEF\xBD\x9C" "domain\xEF\xBD\x9C>"},
        {"title", "<\xEF\xBD\x9Ctitle\xEF\xBD\x9C>"},         {"read_url", "<\xEF\xBD\x9Cread_url\xEF\xBD\x9C>"},
    };
    std::string_view token;
    for (const auto& [name, tok] : kTasks)
      if (task.is_string() && task.get_ref<const std::string&>() == name) token = tok;
    if (token.empty())
      fail(Status::invalid_argument, "{}: invalid task {} (expected action, query, authority, domain, title or read_url)", who, task.dump());
    if (task.get_ref<const std::string&>() == "action") {
      prompt += kAssistant;
      prompt += thinking ? kThinkStart : kThinkEnd;
    }
    prompt += token;
  } else if (r == "user" || r == "developer") {
    prompt += kAssistant;
    const bool open_thinking = thinking && (!c.drop_thinking || static_cast<long>(index) >= last_user);
    prompt += open_thinking ? kThinkStart : kThinkEnd;
  }
  return prompt;
}

}  // namespace

std::string encode_messages(const Json& messages, ThinkingMode thinking_mode, const EncodeOptions& options) {
  detail::check_json_depth(messages, "messages");
  detail::check_json_depth(options.context, "context");
  const Json& ctx_in = options.context.is_null() ? Json::array() : options.context;
  std::vector<Msg> context = merge_tool_messages(ctx_in, "context");
  std::vector<Msg> msgs = merge_tool_messages(messages, "messages");

  std::vector<Msg> full = context;
  full.insert(full.end(), msgs.begin(), msgs.end());
  sort_tool_results_by_call_order(full);
  // The release sorts the context on its own too; sorting is sequential, so the prefix of `full`
  // is already that result.

  std::string prompt = options.add_default_bos_token && context.empty() ? std::string(kBos) : std::string();

  bool drop = options.drop_thinking;
  for (const auto& msg : full)
    if (py_truthy(get(msg.m, "tools"))) drop = false;  // tools anywhere keep all reasoning

  size_t num_to_render = msgs.size();
  size_t context_len = context.size();
  if (thinking_mode == ThinkingMode::thinking && drop) {
    full = drop_thinking_messages(full);
    // As in the release: the context's share is measured by dropping within the context alone.
    // Dropping across the whole list can remove more context messages than dropping within the
    // context alone; the release then renders nothing (range() of a negative count).
    const size_t ctx_after = drop_thinking_messages(context).size();
    num_to_render = full.size() > ctx_after ? full.size() - ctx_after : 0;
    context_len = full.size() - num_to_render;
  }

  const RenderCtx c{thinking_mode, drop, options.reasoning_effort, options.revision};
  for (size_t i = 0; i < num_to_render; ++i) prompt += render_message(i + context_len, full, c);
  return prompt;
}

std::string encode_messages(const Json& messages, std::string_view thinking_mode, const EncodeOptions& options) {
  return encode_messages(messages, parse_thinking_mode(thinking_mode), options);
}

std::string encode_request(const Json& request) {
  detail::check_json_depth(request, "request");
  if (!request.is_object()) fail(Status::invalid_argument, "request: expected a JSON object, got a JSON {}", request.type_name());
  // Options may sit at the top level or under "params" (the chat-vector layout).
  const Json& params = get(request, "params");
  if (!params.is_null() && !params.is_object()) fail(Status::invalid_argument, "request.params: expected an object");
  auto option = [&](const char* key) -> const Json& {
    if (request.contains(key)) return request[key];
    return get(params, key);
  };
  if (!request.contains("messages")) fail(Status::invalid_argument, "request: missing \"messages\"");
  Json messages = request["messages"];
  if (!messages.is_array()) fail(Status::invalid_argument, "request.messages: expected an array, got a JSON {}", messages.type_name());

  const Json& tm = option("thinking_mode");
  if (!tm.is_string()) fail(Status::invalid_argument, "request.thinking_mode: expected \"chat\" or \"thinking\" (required; the release has no default)");
  const ThinkingMode mode = parse_thinking_mode(tm.get<std::string>());

  EncodeOptions opt;
  auto boolean = [&](const char* key, bool& out) {
    const Json& v = option(key);
    if (v.is_null()) return;
    if (!v.is_boolean()) fail(Status::invalid_argument, "request.{}: expected true or false, got {}", key, v.dump());
    out = v.get<bool>();
  };
  boolean("drop_thinking", opt.drop_thinking);
  boolean("add_default_bos_token", opt.add_default_bos_token);
  const Json& effort = option("reasoning_effort");
  if (!effort.is_null()) {
    if (!effort.is_string()) fail(Status::invalid_argument, "request.reasoning_effort: expected null or a string, got {}", effort.dump());
    opt.reasoning_effort = effort.get<std::string>();
  }
  const Json& ctx = option("context");
  if (!ctx.is_null()) opt.context = ctx;
  const Json& rev = option("revision");
  if (!rev.is_null()) {
    if (!rev.is_string()) fail(Status::invalid_argument, "request.revision: expected \"original\" or \"0731\"");
    opt.revision = parse_revision(rev.get<std::string>());
  }

  const Json& tools = option("tools");
  if (py_truthy(tools)) {
    if (!tools.is_array()) fail(Status::invalid_argument, "request.tools: expected an array, got a JSON {}", tools.type_name());
    if (!messages.empty() && (role_is(messages[0], "system") || role_is(messages[0], "developer"))) {
      if (py_truthy(get(messages[0], "tools")))
        fail(Status::invalid_argument, "request.tools: messages[0] already declares tools; give them in one place");
      messages[0]["tools"] = tools;
    } else {
      messages.insert(messages.begin(), Json{{"role", "system"}, {"content", ""}, {"tools", tools}});
    }
  }
  return encode_messages(messages, mode, opt);
}

}  // namespace dsv4::chat
