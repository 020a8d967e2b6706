// Completion parsing, strict mode: the release `parse_message_from_completion_text` (spec §8.1-8.3)
// rebuilt from its rules — read-until-stop scanning, the DSML invoke/parameter patterns with Python
// regex semantics, and the final special-token check. Error messages start with the release's own
// message so callers can match them. Also the mode dispatch and ParsedMessage::to_json.
#include <string>
#include <unordered_set>
#include <vector>

#include "chat_internal.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"
#include "dsv4/utf8.hpp"

namespace dsv4::chat {

namespace detail {

std::optional<std::string> strict_invoke_name(std::string_view h) {
  size_t i = 0;
  while (i < h.size()) {
    const size_t n = py_space_len(h, i);
    if (!n) break;
    i += n;
  }
  constexpr std::string_view kOpen = "name=\"";
  if (h.substr(i, kOpen.size()) != kOpen) return std::nullopt;
  const std::string_view rest = h.substr(i + kOpen.size());
  // Lazy `(.*?)` followed by `">\n` and then the end, or a final newline (Python's `$`): the two
  // candidate ends, shortest name first.
  for (size_t tail : {size_t{4}, size_t{3}}) {
    if (rest.size() < tail) continue;
    const std::string_view end = rest.substr(rest.size() - tail);
    if ((tail == 3 && end == "\">\n") || (tail == 4 && end == "\">\n\n"))
      return std::string(rest.substr(0, rest.size() - tail));
  }
  return std::nullopt;
}

std::optional<DsmlParam> strict_param(std::string_view body) {
  constexpr std::string_view kOpen = " name=\"";
  if (body.substr(0, kOpen.size()) != kOpen) return std::nullopt;
  const std::string_view rest = body.substr(kOpen.size());
  // The value `(.*?)<$` ends at a final "<", or at "<" + final newline.
  auto value_of = [](std::string_view v) -> std::optional<std::string_view> {
    if (v.size() >= 2 && v.substr(v.size() - 2) == "<\n") return v.substr(0, v.size() - 2);
    if (!v.empty() && v.back() == '<') return v.substr(0, v.size() - 1);
    return std::nullopt;
  };
  constexpr std::string_view kFlag = "\" string=\"";
  for (size_t j = rest.find(kFlag); j != std::string_view::npos; j = rest.find(kFlag, j + 1)) {
    const std::string_view after = rest.substr(j + kFlag.size());
    for (std::string_view flag : {std::string_view("true"), std::string_view("false")}) {
      if (after.substr(0, flag.size() + 2) != std::string(flag) + "\">") continue;
      if (auto v = value_of(after.substr(flag.size() + 2)))
        return DsmlParam{std::string(rest.substr(0, j)), flag == "true", std::string(*v)};
    }
  }
  return std::nullopt;
}

std::string arguments_member(const DsmlParam& p) {
  return py_json_quote(p.name) + ": " + (p.is_string ? py_json_quote(p.value) : p.value);
}

}  // namespace detail

namespace {

struct Read {
  size_t index;
  std::string_view content;
  std::string_view stop;  // empty: no stop string found, content runs to the end
};

// The release's _read_until_stop: earliest stop wins (first listed on a tie). One forward pass
// that ends at the earliest stop, so its cost is the distance to that stop, not to the farthest
// occurrence of each stop (searching each stop over the whole rest of the text made a message with
// n invokes cost O(n²): the closing tool_calls tag is searched from every invoke).
Read read_until_stop(size_t index, std::string_view text, std::initializer_list<std::string_view> stops) {
  index = std::min(index, text.size());
  char firsts[8];
  size_t n_firsts = 0;
  for (std::string_view s : stops)
    if (std::string_view(firsts, n_firsts).find(s[0]) == std::string_view::npos && n_firsts < sizeof firsts)
      firsts[n_firsts++] = s[0];
  const std::string_view first_bytes(firsts, n_firsts);
  for (size_t i = text.find_first_of(first_bytes, index); i != std::string_view::npos;
       i = text.find_first_of(first_bytes, i + 1)) {
    const std::string_view rest = text.substr(i);
    for (std::string_view s : stops)
      if (rest.starts_with(s)) return {i + s.size(), text.substr(index, i - index), s};
  }
  return {text.size(), text.substr(index), {}};
}

[[noreturn]] void reject(const std::string& message) { throw Error(Status::format, message); }

ParsedMessage parse_strict(std::string_view text, ThinkingMode mode) {
  const std::string dsml(kDsml);
  const std::string tc_start = "\n\n<" + dsml + "tool_calls";
  const std::string tc_end = "</" + dsml + "tool_calls>";
  const std::string invoke_open = "<" + dsml + "invoke";
  const std::string invoke_close = "</" + dsml + "invoke";
  const std::string param_open = "<" + dsml + "parameter";
  const std::string param_close = "/" + dsml + "parameter";

  ParsedMessage out;
  size_t index = 0;
  if (mode == ThinkingMode::thinking) {
    Read r = read_until_stop(index, text, {kThinkEnd, tc_start});
    index = r.index;
    out.reasoning_content = r.content;
    if (r.stop != kThinkEnd) reject("Invalid thinking format: missing </think>");
  }
  Read r = read_until_stop(index, text, {kEos, tc_start});
  index = r.index;
  out.content = r.content;
  std::string_view stop = r.stop;
  const bool tool_calling = stop == tc_start;
  if (!tool_calling && stop != kEos) reject("Invalid format: missing EOS token");

  if (tool_calling) {
    while (index < text.size()) {
      Read a = read_until_stop(index, text, {invoke_open, tc_end});
      index = a.index;
      if (a.content != ">\n") reject("Tool call format error: expected '>\\n' but got '" + std::string(a.content) + "'");
      stop = a.stop;
      if (stop == tc_end) break;
      if (stop.empty()) reject("Missing special token in tool calls");

      Read h = read_until_stop(index, text, {param_open, invoke_close});
      index = h.index;
      auto name = detail::strict_invoke_name(h.content);
      if (!name) reject("Tool name format error: '" + std::string(h.content) + "'");
      stop = h.stop;
      std::vector<detail::DsmlParam> params;
      std::unordered_set<std::string> param_names;
      while (stop == param_open) {
        Read p = read_until_stop(index, text, {param_close});
        index = p.index;
        auto param = detail::strict_param(p.content);
        if (!param) reject("Parameter format error: '" + std::string(p.content) + "'");
        if (!param_names.insert(param->name).second) reject("Duplicate parameter name: '" + param->name + "'");
        params.push_back(std::move(*param));
        Read n = read_until_stop(index, text, {param_open, invoke_close});
        index = n.index;
        if (n.content != ">\n") reject("Parameter format error: expected '>\\n' but got '" + std::string(n.content) + "'");
        stop = n.stop;
      }
      std::string args = "{";
      for (size_t k = 0; k < params.size(); ++k) {
        if (k) args += ", ";
        args += detail::arguments_member(params[k]);
      }
      args += "}";
      out.tool_calls.push_back({std::move(*name), std::move(args)});
    }
    Read t = read_until_stop(index, text, {kEos});
    index = t.index;
    stop = t.stop;
    if (!t.content.empty()) reject("Unexpected content after tool calls");
  }
  if (index != text.size() || !(stop == kEos || stop.empty())) reject("Unexpected content at end");

  for (std::string_view sp : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
    if (out.content.find(sp) != std::string::npos || out.reasoning_content.find(sp) != std::string::npos)
      reject("Unexpected special token '" + std::string(sp) + "' in content");
  }
  return out;
}

}  // namespace

namespace detail {
ParsedMessage parse_lenient(std::string_view text, ThinkingMode mode);  // lenient.cpp
}

ParsedMessage parse_message_from_completion_text(std::string_view text, ThinkingMode thinking_mode, ParseMode mode) {
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
    fail(Status::invalid_argument, "completion text: invalid UTF-8 at byte offset {}", bad);
  return mode == ParseMode::strict ? parse_strict(text, thinking_mode) : detail::parse_lenient(text, thinking_mode);
}

ParsedMessage parse_message_from_completion_text(std::string_view text, std::string_view thinking_mode, ParseMode mode) {
  return parse_message_from_completion_text(text, parse_thinking_mode(thinking_mode), mode);
}

Json ParsedMessage::to_json() const {
  Json calls = Json::array();
  for (const auto& tc : tool_calls)
    calls.push_back(Json{{"type", "function"}, {"function", Json{{"name", tc.name}, {"arguments", tc.arguments}}}});
  return Json{{"role", role}, {"content", content}, {"reasoning_content", reasoning_content}, {"tool_calls", calls}};
}

}  // namespace dsv4::chat
