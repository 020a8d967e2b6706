// DeepSeek-V4 chat format (../shared/spec/dsv4-chat-format.md): prompt encoding and completion
// parsing mirroring the release module `encoding_dsv4` one to one (same names, arguments and dict
// shapes) so the Python binding is a thin wrapper. No global state. Invariants: encoding is
// byte-identical to the release; strict parsing accepts/rejects exactly what the release does;
// lenient parsing equals strict whenever strict succeeds and never puts markers into text fields.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::chat {

// Request JSON keeps key order (tool schemas are re-serialized in the client's key order).
using Json = nlohmann::ordered_json;

// ---- marker strings (exact UTF-8; U+FF5C and U+2581 inside) -----------------------------------
inline constexpr std::string_view kBos = "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
inline constexpr std::string_view kEos = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
inline constexpr std::string_view kUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
inline constexpr std::string_view kAssistant = "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>";
inline constexpr std::string_view kLatestReminder = "<\xEF\xBD\x9Clatest_reminder\xEF\xBD\x9C>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "\xEF\xBD\x9C" "DSML\xEF\xBD\x9C";

enum class ThinkingMode { chat, thinking };
// Which release of encoding_dsv4.py to mirror; they differ only in the reasoning-effort table
// (spec §9). The project targets `original` (DeepSeek-V4-Flash @60d8d707).
enum class Revision { original, r0731 };
enum class ParseMode { strict, lenient };

// "chat" / "thinking"; anything else is Status::invalid_argument.
ThinkingMode parse_thinking_mode(std::string_view s);
std::string_view to_string(ThinkingMode m);
// "original" (also "60d8d707...") / "0731" (also "7872f01b...").
Revision parse_revision(std::string_view s);

// Keyword arguments of the release `encode_messages` (defaults are the release defaults), plus
// the encoder revision.
struct EncodeOptions {
  Json context = Json::array();  // earlier messages already in the KV cache (spec §4.7)
  bool drop_thinking = true;
  bool add_default_bos_token = true;
  std::optional<std::string> reasoning_effort;  // nullopt = Python None
  Revision revision = Revision::original;
};

// encode_messages(messages, thinking_mode, context=None, drop_thinking=True,
//                 add_default_bos_token=True, reasoning_effort=None)
// `messages`: array of OpenAI-style message objects. Returns the prompt string (BOS included).
// Conversations the release rejects (or crashes on) throw dsv4::Error(Status::invalid_argument)
// naming the message (e.g. "messages[3] (developer): content must be a non-empty string").
std::string encode_messages(const Json& messages, ThinkingMode thinking_mode, const EncodeOptions& options = {});
std::string encode_messages(const Json& messages, std::string_view thinking_mode, const EncodeOptions& options = {});

// A whole request object as the CLI / servers receive it:
//   {"messages": [...], "thinking_mode": "chat"|"thinking", "drop_thinking": bool,
//    "reasoning_effort": null|"high"|"max"|..., "add_default_bos_token": bool, "context": [...],
//    "tools": [...], "revision": "original"|"0731"}
// Options may also sit under "params" (the chat-vector layout). Missing keys take the release
// defaults; "thinking_mode" is required (the release has no default). Request-level "tools" are
// attached the way vLLM/SGLang do (spec §5.1): onto the first message when it is system or
// developer, else onto a new leading {"role": "system", "content": ""}. Other keys are ignored.
std::string encode_request(const Json& request);

// ---- parsing -------------------------------------------------------------------------------
struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text as the release builds it (not always valid JSON: spec §8.2)
  bool operator==(const ToolCall&) const = default;
};

struct ParsedMessage {
  std::string role = "assistant";
  std::string content;
  std::string reasoning_content;
  std::vector<ToolCall> tool_calls;
  // Lenient mode only (always true / empty after a strict parse): whether an EOS marker (or a
  // closed tool-call block) ended the text, and what was recovered or dropped, for logs.
  bool ended = true;
  std::vector<std::string> warnings;

  // {"role", "content", "reasoning_content", "tool_calls": [{"type": "function",
  //  "function": {"name", "arguments"}}]} — the release dict, key order included.
  Json to_json() const;
  bool same_message(const ParsedMessage& o) const {
    return role == o.role && content == o.content && reasoning_content == o.reasoning_content &&
           tool_calls == o.tool_calls;
  }
};

// parse_message_from_completion_text(text, thinking_mode): `text` is what the model generated
// after the prompt for one assistant turn. strict: the release parser; malformed text throws
// dsv4::Error(Status::format) whose message starts with the release's message (e.g. "Invalid
// format: missing EOS token"). lenient: never throws on valid UTF-8 text; rules in docs/chat-format.md.
// Both modes first reject ill-formed UTF-8 with dsv4::Error(Status::invalid_argument,
// "completion text: invalid UTF-8 at byte offset N").
ParsedMessage parse_message_from_completion_text(std::string_view text, ThinkingMode thinking_mode,
                                                 ParseMode mode = ParseMode::strict);
ParsedMessage parse_message_from_completion_text(std::string_view text, std::string_view thinking_mode,
                                                 ParseMode mode = ParseMode::strict);

// ---- JSON from callers ---------------------------------------------------------------------
// Parses caller-supplied JSON text (ordered, keys in the caller's order). Every entry point that
// takes JSON text uses this: malformed text, invalid UTF-8 and nesting deeper than
// kMaxJsonDepth levels (deep values would overflow the stack in recursive copies / dumps) throw
// dsv4::Error(Status::invalid_argument) whose message starts with `what`.
inline constexpr int kMaxJsonDepth = 512;
Json parse_json_limited(std::string_view text, const char* what);

// ---- JSON as Python's json module writes it ------------------------------------------------
// json.dumps(value, ensure_ascii=False): ", " and ": " separators, non-ASCII raw, floats as
// Python repr (1.0, 1e+16, -0.0, NaN, Infinity).
std::string py_json_dumps(const Json& value);
// json.dumps(s, ensure_ascii=False) for one string.
std::string py_json_quote(std::string_view s);
}  // namespace dsv4::chat
