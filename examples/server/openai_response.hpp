// OpenAI response pieces: error bodies, ids, usage, finish reasons, logprobs objects (chat and
// completions shapes) and SSE framing. Pure functions of their inputs (no HTTP, no engine).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api_error.hpp"
#include "chat_pipeline.hpp"
#include "dsv4/generate.hpp"
#include "dsv4/sampler.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4::server {

// Compact JSON; ill-formed UTF-8 (never expected: the decoder emits U+FFFD) is replaced rather
// than thrown on, so a response can always be written.
std::string dump(const Json& j);
// One server-sent event: "data: <json>\n\n".
std::string sse(const Json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// {"error": {"message", "type", "param", "code"}} (param / code null when empty).
Json error_body(const ApiError& e);
// prefix + 32 random hex digits ("cmpl-…", "chatcmpl-…").
std::string new_request_id(std::string_view prefix);
int64_t unix_time();

// {"prompt_tokens", "completion_tokens", "total_tokens", "completion_tokens_details":
//  {"reasoning_tokens"}}.
Json usage_json(int64_t prompt, int64_t completion, int64_t reasoning);

// OpenAI's finish_reason: "stop" (EOS, stop string, stop token), "length" (max_tokens, context),
// "abort" (cancelled), "error".
std::string finish_reason(StopReason r);

// The text of one token as logprobs show it (lossy UTF-8 per token, as vLLM does; ids past the
// tokenizer's vocabulary read "token_id:N").
std::string token_text(const Tokenizer& tok, int32_t id);

// Chat: one entry of logprobs.content: {"token", "logprob", "bytes", "top_logprobs": [...]}.
Json chat_logprob_entry(const Tokenizer& tok, const SampleResult& r, int top_n);

// Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"},
// built token by token; take() returns what was added since the last take (stream chunks), the
// text offsets continuing across takes.
class CompletionLogprobs {
 public:
  explicit CompletionLogprobs(size_t first_offset = 0) : offset_(first_offset) {}
  void add(const Tokenizer& tok, const SampleResult& r, int top_n);
  bool empty() const { return tokens_.empty(); }
  Json take();

 private:
  Json tokens_ = Json::array(), logprobs_ = Json::array(), top_ = Json::array(), offsets_ = Json::array();
  size_t offset_;
};

// Number of Unicode code points in UTF-8 text (OpenAI's text offsets count characters).
size_t utf8_length(std::string_view s);

}  // namespace dsv4::server
