// Chat rendering: arbitrary JSON (parsed as callers' JSON is) → encode_request when it is an
// object, encode_messages when it is an array (mode and options from the input length).
// Invariants: only dsv4::Error (invalid_argument) escapes; a rendered prompt is valid UTF-8 and
// starts with BOS when add_default_bos_token is set.
#include <cstdint>

#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"
#include "dsv4/utf8.hpp"
#include "fuzz_util.hpp"

using namespace dsv4;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto& tally = dsv4_fuzz::tally("chat rendering");
  chat::Json j;
  try {
    j = chat::parse_json_limited(text, "fuzz request");
  } catch (const Error& e) {
    tally.error(e.status());
    return 0;
  }
  try {
    std::string prompt;
    if (j.is_object()) {
      prompt = chat::encode_request(j);
    } else {
      chat::EncodeOptions o;
      o.drop_thinking = size & 2;
      o.add_default_bos_token = size & 4;
      if (size & 8) o.reasoning_effort = (size & 16) ? "max" : "high";
      o.revision = (size & 32) ? chat::Revision::r0731 : chat::Revision::original;
      prompt = chat::encode_messages(j, (size & 1) ? chat::ThinkingMode::thinking : chat::ThinkingMode::chat, o);
      if (o.add_default_bos_token) FUZZ_CHECK(prompt.starts_with(chat::kBos));
    }
    FUZZ_CHECK(first_invalid_utf8(prompt) == std::string_view::npos);
    tally.ok();
  } catch (const Error& e) {
    FUZZ_CHECK(e.status() == Status::invalid_argument);
    tally.error(e.status());
  }
  return 0;
}
