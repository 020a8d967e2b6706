// OpenAI request bodies → validated engine requests. Every check the server makes on a request
// body lives here, so the routes only route: JSON syntax and depth (> 64 levels → 400), field
// types and ranges (400 naming the field as OpenAI's "param"), prompt rendering and tokenization,
// and the context check (400 with vLLM's "This model's maximum context length is …" message).
// Everything throws ApiError; nothing here touches HTTP or the scheduler.
//
// Field semantics follow OpenAI, with vLLM's extensions (top_k, min_p, repetition_penalty,
// ignore_eos, stop_token_ids, chat_template_kwargs); docs/server.md has the table.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat_pipeline.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/scheduler.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4::server {

inline constexpr int kMaxJsonNesting = 64;

struct RequestLimits {
  int64_t max_model_len = 0;   // context per sequence (prompt + generated)
  int max_tokens_limit = 0;    // largest max_tokens accepted; 0 = no limit beyond the context
  int max_n = 16;
  int32_t vocab_size = 0;      // ids a prompt / logit_bias / stop_token_ids may name: [0, vocab_size)
  int max_prompts = 256;       // completions: prompts in one request
};

// Parses a request body: malformed JSON, invalid UTF-8 or nesting deeper than kMaxJsonNesting →
// 400; a top level that is not an object → 400.
Json parse_body(std::string_view body);

// The "model" field: "" when absent or null; 400 when present and not a string.
std::string requested_model(const Json& body);

struct CompletionRequest {
  std::vector<std::vector<int32_t>> prompts;  // one scheduler request each (BOS added to text prompts)
  std::vector<std::string> prompt_texts;      // for echo: the text, or the decoded ids
  RequestParams params;                       // max_tokens resolved against the longest prompt
  bool stream = false, include_usage = false, echo = false;
  int logprobs = -1;                          // −1 none; k ≥ 0: the token's plus top-k
};

enum class ToolChoice { none, automatic, required, named };

struct ChatRequest {
  std::vector<int32_t> prompt;  // rendered (encode_messages) + prefill, tokenized
  std::string prompt_text;
  RequestParams params;
  bool stream = false, include_usage = false;
  bool logprobs = false;
  int top_logprobs = 0;
  chat::ThinkingMode mode = chat::ThinkingMode::chat;
  ToolChoice tool_choice = ToolChoice::none;  // effective: none when no tools were given
  std::string forced_function;                // ToolChoice::named
  bool parallel_tool_calls = true;
  std::string prefill;                        // assistant-turn text the server wrote (enforcement)
  // The pipeline options for this request's choices (mode, prefill, tools on/off, call limit).
  ChatPipeline::Options pipeline_options() const;
};

CompletionRequest parse_completion_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim);
ChatRequest parse_chat_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim);

// The effective max_tokens for a prompt of `prompt_len` tokens: the requested value (checked
// against --max-tokens-limit and the context), else what the context leaves (capped by the limit).
// `what` names the prompt in the context message ("messages" / "prompt").
int resolve_max_tokens(std::optional<int64_t> requested, int64_t prompt_len, const RequestLimits& lim,
                       std::string_view what);

// Text prompt for /tokenize: {"prompt": str, "add_special_tokens": bool (default true)} or
// {"messages": [...], chat fields as in chat completions}. Returns the token ids.
std::vector<int32_t> parse_tokenize_request(const Json& body, const Tokenizer& tok, const RequestLimits& lim);
// {"tokens": [ids]} for /detokenize (ids within the tokenizer's vocabulary).
std::vector<int32_t> parse_detokenize_request(const Json& body, const Tokenizer& tok);

}  // namespace dsv4::server
