// Completion parsing: byte 0 = flags (bit 0 thinking mode, bits 1-7 seed the chunk splits), the
// rest is the completion text (ill-formed UTF-8 must be rejected by both parsers; the text is then
// made valid, each bad byte → '?', and used as below). Strict, lenient and streaming (strict and lenient StreamParser fed
// at pseudo-random split points, empty chunks and cut UTF-8 characters included). Invariants
// (include/dsv4/chat_format.hpp, chat_stream.hpp): lenient never throws on valid UTF-8; it equals
// strict whenever strict succeeds; text fields hold no markers; the streamed message equals the
// batch one for any split; each kind's deltas add up to the message's field; the strict stream's
// result equals the strict batch parse.
#include <cstdint>
#include <optional>

#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"
#include "dsv4/error.hpp"
#include "dsv4/utf8.hpp"
#include "fuzz_util.hpp"

using namespace dsv4;
using chat::Delta;
using chat::ParsedMessage;

namespace {
bool same(const ParsedMessage& a, const ParsedMessage& b) { return a.same_message(b) && a.ended == b.ended; }

void check_no_markers(const std::string& s) {
  for (std::string_view m : {chat::kBos, chat::kEos, chat::kThinkStart, chat::kThinkEnd, chat::kDsml})
    FUZZ_CHECK(s.find(m) == std::string::npos);
}

struct Streamed {
  std::optional<ParsedMessage> msg;
  std::string reasoning, content;
  std::vector<chat::ToolCall> calls;
  bool threw = false;
};

Streamed stream(std::string_view text, chat::ThinkingMode mode, chat::ParseMode pm, uint32_t seed) {
  Streamed r;
  chat::StreamParser sp(mode, pm);
  uint32_t x = seed * 2654435761u + 12345u;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  auto take = [&](const std::vector<Delta>& ds) {
    for (const Delta& d : ds) {
      switch (d.kind) {
        case Delta::Kind::reasoning: r.reasoning += d.text; break;
        case Delta::Kind::content: r.content += d.text; break;
        case Delta::Kind::tool_call_name:
          FUZZ_CHECK(d.tool_index == static_cast<int>(r.calls.size()));
          r.calls.push_back({d.text, ""});
          break;
        case Delta::Kind::tool_call_arguments:
          FUZZ_CHECK(d.tool_index + 1 == static_cast<int>(r.calls.size()));
          r.calls.back().arguments += d.text;
          break;
      }
      if (d.kind == Delta::Kind::reasoning || d.kind == Delta::Kind::content) {
        check_no_markers(d.text);
        FUZZ_CHECK(first_invalid_utf8(d.text) == std::string_view::npos);
      }
    }
  };
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = std::min<size_t>(text.size() - i, next() % (1u << (next() % 12)));
    take(sp.feed(text.substr(i, n)));
    i += n;
  }
  take(sp.finish());
  try {
    r.msg = sp.result();
  } catch (const Error& e) {
    FUZZ_CHECK(pm == chat::ParseMode::strict && e.status() == Status::format);
    r.threw = true;
  }
  return r;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& tally = dsv4_fuzz::tally("completion parsing (strict outcome)");
  const auto mode = (data[0] & 1) ? chat::ThinkingMode::thinking : chat::ThinkingMode::chat;
  const uint32_t seed = data[0] >> 1;
  std::string owned(reinterpret_cast<const char*>(data + 1), size - 1);
  if (first_invalid_utf8(owned) != std::string_view::npos) {
    for (auto pm : {chat::ParseMode::strict, chat::ParseMode::lenient}) {
      try {
        (void)chat::parse_message_from_completion_text(owned, mode, pm);
        FUZZ_CHECK(false);
      } catch (const Error& e) {
        FUZZ_CHECK(e.status() == Status::invalid_argument);
      }
    }
    // Go on with the text made valid (each ill-formed byte → '?'), so mutations that break
    // UTF-8 still exercise the parsers.
    for (size_t i = 0; i < owned.size();) {
      const size_t bad = first_invalid_utf8(std::string_view(owned).substr(i));
      if (bad == std::string_view::npos) break;
      owned[i + bad] = '?';
      i += bad + 1;
    }
  }
  const std::string_view text = owned;
  std::optional<ParsedMessage> strict;
  try {
    strict = chat::parse_message_from_completion_text(text, mode, chat::ParseMode::strict);
    tally.ok();
  } catch (const Error& e) {
    FUZZ_CHECK(e.status() == Status::format);
    tally.error(e.status());
  }
  const ParsedMessage lenient = chat::parse_message_from_completion_text(text, mode, chat::ParseMode::lenient);
  if (strict) FUZZ_CHECK(lenient.same_message(*strict));
  check_no_markers(lenient.content);
  check_no_markers(lenient.reasoning_content);

  const Streamed s = stream(text, mode, chat::ParseMode::lenient, seed);
  FUZZ_CHECK(s.msg && same(*s.msg, lenient));
  FUZZ_CHECK(s.reasoning == lenient.reasoning_content);
  FUZZ_CHECK(s.content == lenient.content);
  FUZZ_CHECK(s.calls == lenient.tool_calls);

  const Streamed st = stream(text, mode, chat::ParseMode::strict, seed + 1);
  FUZZ_CHECK(st.threw == !strict);
  if (strict) {
    FUZZ_CHECK(st.msg->same_message(*strict));
    // The deltas are the lenient ones; on text the release accepts they add up to its result.
    FUZZ_CHECK(st.reasoning == strict->reasoning_content && st.content == strict->content && st.calls == strict->tool_calls);
  }
  return 0;
}
