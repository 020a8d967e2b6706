// ChatPipeline: one chat completion choice, from generated text to OpenAI message deltas. A pure
// class (no HTTP, no engine): fed each token's final text as the scheduler releases it, it runs
// dsv4::chat::StreamParser (lenient) and returns the "delta" objects of OpenAI chat-completion
// chunks — {"reasoning_content": …}, {"content": …}, and tool-call deltas
// {"tool_calls": [{"index", "id", "type": "function", "function": {"name", "arguments": ""}}]}
// followed by {"tool_calls": [{"index", "function": {"arguments": "<the whole JSON>"}}]}.
//
// Invariants (inherited from StreamParser, checked by tests/test_chat_pipeline.cpp): no delta text
// contains <think>, </think>, BOS/EOS or DSML markup; the concatenated deltas equal the final
// message(), which equals chat::parse_message_from_completion_text(prefill + text, lenient); the
// result does not depend on how the text was split into pieces.
//
// `prefill` is text the server wrote at the start of the assistant turn (tool_choice enforcement,
// docs/server.md): it is parsed as if generated but never counted as a token.
#pragma once
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/chat_format.hpp"
#include "dsv4/chat_stream.hpp"

namespace dsv4::server {

using Json = nlohmann::ordered_json;

class ChatPipeline {
 public:
  struct Options {
    chat::ThinkingMode mode = chat::ThinkingMode::chat;
    std::string prefill;
    // False when the request offered no tools (or tool_choice "none"): parsed calls are dropped —
    // the DSML never reaches content either way.
    bool tools_enabled = true;
    int max_tool_calls = -1;  // −1 = any; 1 for parallel_tool_calls: false
    // Makes the id of each tool call ("call_" + 24 random hex digits by default).
    std::function<std::string()> make_call_id;
  };

  explicit ChatPipeline(Options opt);

  // One token's text (may be empty). Returns the deltas that became certain.
  std::vector<Json> feed(std::string_view piece);
  // End of the generation: the last deltas. Idempotent (later calls return nothing).
  std::vector<Json> finish();

  // After finish(): the assistant message in OpenAI shape: {"role": "assistant", "content",
  // "reasoning_content" (thinking mode only), "tool_calls" (when any)}. content is null when the
  // turn is only tool calls.
  Json message() const;
  const chat::ParsedMessage& parsed() const { return parsed_; }
  int tool_calls() const { return static_cast<int>(ids_.size()); }
  const std::vector<chat::ToolCall>& calls() const { return calls_; }
  // Tokens fed while the model was still reasoning (thinking mode; the token that closes the
  // reasoning is not counted) — OpenAI's completion_tokens_details.reasoning_tokens.
  int reasoning_tokens() const { return reasoning_tokens_; }
  bool finished() const { return finished_; }

 private:
  std::vector<Json> convert(const std::vector<chat::Delta>& ds);
  void track_reasoning(std::string_view piece, bool is_token);

  Options opt_;
  chat::StreamParser parser_;
  chat::ParsedMessage parsed_;
  std::vector<std::string> ids_;   // per emitted tool call
  std::vector<chat::ToolCall> calls_;  // the emitted calls (name, arguments), in order
  std::vector<int> call_map_;      // parser tool index → emitted index (−1 = dropped)
  std::string tail_;               // last bytes of the raw text (marker search across pieces)
  size_t fed_bytes_ = 0;           // raw text length so far (while reasoning)
  std::deque<size_t> recent_;      // start offsets of the tokens overlapping tail_
  bool reasoning_ = false;
  int reasoning_tokens_ = 0;
  bool finished_ = false;
};

// "call_" + 24 random lowercase hex digits (vLLM's shape).
std::string random_call_id();

}  // namespace dsv4::server
