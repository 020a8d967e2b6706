// Streaming parser for DeepSeek-V4 completions: fed the generated text chunk by chunk (any byte
// split, e.g. token by token), it emits typed deltas — reasoning text, content text, tool-call
// name, tool-call arguments — and at the end the same message the batch parser returns.
// Invariants: deltas never contain <think>, </think>, BOS/EOS or DSML markup; text deltas end on
// UTF-8 character boundaries; concatenating the deltas of each kind gives the final message's
// fields; the final message does not depend on how the text was split.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/chat_format.hpp"

namespace dsv4::chat {

struct Delta {
  enum class Kind { reasoning, content, tool_call_name, tool_call_arguments };
  Kind kind;
  std::string text;
  int tool_index = -1;  // for tool-call kinds: 0-based index of the call in the message
  bool operator==(const Delta&) const = default;
};

namespace detail {
class LenientMachine;  // lib/chat/lenient.cpp
}

// Reasoning and content are streamed as they arrive. A tool call is emitted when its invoke ends
// (`</｜DSML｜invoke>`, or the end of text at a point the release also accepts), as one
// tool_call_name delta followed by one tool_call_arguments delta holding the whole arguments
// JSON; a malformed or cut-off call is dropped, never sent with partial arguments.
//
// Mode lenient: the final message is parse_message_from_completion_text(text, mode, lenient).
// Mode strict: deltas are the same as in lenient mode, and result() is the strict (release)
// parse of the whole text, throwing dsv4::Error when the release would reject it. When the text is
// valid for the release, the deltas add up to exactly that result.
class StreamParser {
 public:
  explicit StreamParser(ThinkingMode mode, ParseMode parse_mode = ParseMode::lenient);
  StreamParser(StreamParser&&) noexcept;
  StreamParser& operator=(StreamParser&&) noexcept;
  ~StreamParser();

  // Appends `chunk` and returns the deltas that became certain. Text after an EOS is kept (for the
  // strict verdict) but produces no deltas. Calling feed after finish is Status::invalid_argument.
  // Ill-formed UTF-8 is Status::invalid_argument (the chunk is then not taken); a character cut off
  // at the end of a chunk is fine, but still cut off at finish() it is an error there.
  std::vector<Delta> feed(std::string_view chunk);
  // End of generation: flushes held-back text and returns the last deltas. Idempotent.
  std::vector<Delta> finish();
  // True once an EOS marker was seen (later text is ignored by the lenient parse).
  bool saw_eos() const;
  // The final message; requires finish(). Strict mode throws dsv4::Error(Status::format) for text
  // the release parser rejects.
  ParsedMessage result() const;

 private:
  ThinkingMode mode_;
  ParseMode parse_mode_;
  std::unique_ptr<detail::LenientMachine> machine_;
  bool finished_ = false;
};

}  // namespace dsv4::chat
