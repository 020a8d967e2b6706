// C API: the DeepSeek-V4 chat format (render messages → prompt, parse a completion → message),
// a thin JSON-text layer over include/dsv4/chat_format.hpp so that C callers need no JSON types.
#include <string>

#include <nlohmann/json.hpp>

#include "capi_internal.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"

struct dsv4_chat_stream {
  dsv4::chat::StreamParser parser;
  bool finished = false;
};

using namespace dsv4;
using capi::guard;
using capi::require;

namespace {

chat::Json parse_json(const char* text, const char* what) {
  // ordered: the encoder must see keys in the caller's order (tool schemas are re-serialised).
  return chat::parse_json_limited(text, what);
}

void emit(const std::vector<chat::Delta>& deltas, dsv4_delta_callback cb, void* user) {
  if (!cb) return;
  for (const chat::Delta& d : deltas)
    cb(static_cast<int32_t>(d.kind), d.tool_index, d.text.data(), d.text.size(), user);
}

static_assert(DSV4_DELTA_REASONING == static_cast<int>(chat::Delta::Kind::reasoning));
static_assert(DSV4_DELTA_CONTENT == static_cast<int>(chat::Delta::Kind::content));
static_assert(DSV4_DELTA_TOOL_CALL_NAME == static_cast<int>(chat::Delta::Kind::tool_call_name));
static_assert(DSV4_DELTA_TOOL_CALL_ARGUMENTS == static_cast<int>(chat::Delta::Kind::tool_call_arguments));

}  // namespace

extern "C" {

dsv4_chat_params dsv4_chat_default_params(void) {
  dsv4_chat_params p{};
  p.thinking_mode = "chat";
  p.drop_thinking = true;
  p.add_default_bos_token = true;
  p.reasoning_effort = nullptr;
  p.context_json = nullptr;
  p.revision = nullptr;
  return p;
}

dsv4_status dsv4_chat_render(const char* messages_json, const dsv4_chat_params* params, char* buf, size_t cap,
                             size_t* n_needed) {
  return guard([&] {
    require(messages_json, "messages_json");
    require(n_needed, "n_needed");
    const dsv4_chat_params p = params ? *params : dsv4_chat_default_params();
    for (uint64_t r : p.reserved)
      if (r) fail(Status::invalid_argument, "dsv4_chat_params.reserved must be zero (use dsv4_chat_default_params)");
    const chat::Json messages = parse_json(messages_json, "messages_json");
    if (!messages.is_array()) fail(Status::invalid_argument, "messages_json must be a JSON array of messages");
    chat::Json context;
    if (p.context_json) {
      context = parse_json(p.context_json, "dsv4_chat_params.context_json");
      if (!context.is_array()) fail(Status::invalid_argument, "dsv4_chat_params.context_json must be a JSON array");
    }
    chat::EncodeOptions opt;
    if (p.context_json) opt.context = std::move(context);
    opt.drop_thinking = p.drop_thinking;
    opt.add_default_bos_token = p.add_default_bos_token;
    if (p.reasoning_effort) opt.reasoning_effort = p.reasoning_effort;
    if (p.revision) opt.revision = chat::parse_revision(p.revision);
    const std::string prompt =
        chat::encode_messages(messages, std::string_view(p.thinking_mode ? p.thinking_mode : "chat"), opt);
    capi::copy_out(prompt.data(), prompt.size(), 1, true, buf, cap, n_needed, "dsv4_chat_render");
  });
}

dsv4_status dsv4_chat_parse(const char* text, size_t text_len, const char* thinking_mode, bool strict, char* buf,
                            size_t cap, size_t* n_needed) {
  return guard([&] {
    if (text_len) require(text, "text");
    require(n_needed, "n_needed");
    const chat::ThinkingMode mode = chat::parse_thinking_mode(thinking_mode ? thinking_mode : "chat");
    const chat::ParsedMessage m = chat::parse_message_from_completion_text(
        std::string_view(text ? text : "", text_len), mode, strict ? chat::ParseMode::strict : chat::ParseMode::lenient);
    // Python-compatible spelling (raw UTF-8, ", " / ": "), so the text equals json.dumps of the dict.
    const std::string json = chat::py_json_dumps(m.to_json());
    capi::copy_out(json.data(), json.size(), 1, true, buf, cap, n_needed, "dsv4_chat_parse");
  });
}

dsv4_status dsv4_chat_stream_create(const char* thinking_mode, bool strict, dsv4_chat_stream** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(out, "out");
    const chat::ThinkingMode mode = chat::parse_thinking_mode(thinking_mode ? thinking_mode : "chat");
    *out = new dsv4_chat_stream{chat::StreamParser(mode, strict ? chat::ParseMode::strict : chat::ParseMode::lenient)};
  });
}

void dsv4_chat_stream_free(dsv4_chat_stream* stream) { delete stream; }

dsv4_status dsv4_chat_stream_feed(dsv4_chat_stream* stream, const char* text, size_t len,
                                  dsv4_delta_callback callback, void* user_data) {
  return guard([&] {
    require(stream, "stream");
    if (len) require(text, "text");
    if (stream->finished) fail(Status::invalid_argument, "dsv4_chat_stream_feed after dsv4_chat_stream_finish");
    emit(stream->parser.feed(std::string_view(text ? text : "", len)), callback, user_data);
  });
}

dsv4_status dsv4_chat_stream_finish(dsv4_chat_stream* stream, dsv4_delta_callback callback, void* user_data) {
  return guard([&] {
    require(stream, "stream");
    emit(stream->parser.finish(), callback, user_data);
    stream->finished = true;
  });
}

dsv4_status dsv4_chat_stream_result(const dsv4_chat_stream* stream, char* buf, size_t cap, size_t* n_needed) {
  return guard([&] {
    require(stream, "stream");
    require(n_needed, "n_needed");
    if (!stream->finished) fail(Status::invalid_argument, "dsv4_chat_stream_result before dsv4_chat_stream_finish");
    const std::string json = chat::py_json_dumps(stream->parser.result().to_json());
    capi::copy_out(json.data(), json.size(), 1, true, buf, cap, n_needed, "dsv4_chat_stream_result");
  });
}

}  // extern "C"
