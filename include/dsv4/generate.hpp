// The generation loop, written once: StopMatcher turns each sampled token into the text that
// became final with it and decides when to stop (EOS, stop token ids, stop strings held back
// UTF-8-safely, max tokens, context end); generate() drives one Session with it, and the batch
// Scheduler (scheduler.hpp) drives many sequences with the same class and the same sampling path
// (the backend samples inside its step, ForwardChunk::sampler).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dsv4/engine.hpp"
#include "dsv4/sampler.hpp"

namespace dsv4 {

class Tokenizer;
class StreamDecoder;

// Why a generation ended. finish_reason_name() gives OpenAI's "stop" / "length" / "abort" /
// "error" grouping; stop_reason_name() the exact cause.
enum class StopReason { eos, stop_string, max_tokens, context_full, cancelled, stop_token, error };
const char* stop_reason_name(StopReason r);
const char* finish_reason_name(StopReason r);  // "stop" | "length" | "abort" | "error"

struct StopParams {
  int max_tokens = 256;                   // ≥ 0
  bool stop_on_eos = true;                // false = vLLM's ignore_eos
  int32_t eos_id = -1;                    // −1 = the tokenizer's eos_id() (no EOS stop without one)
  std::vector<int32_t> stop_token_ids;    // generation stops after one of these (kept in the output)
  std::vector<std::string> stop_strings;  // generation stops once the text contains one (excluded)
};

class StopMatcher {
 public:
  // Throws Error(invalid_argument): max_tokens < 0, stop strings without a tokenizer, empty stop
  // strings, a stop string longer than 4096 bytes.
  StopMatcher(const Tokenizer* tok, const StopParams& p);
  ~StopMatcher();
  StopMatcher(StopMatcher&&) noexcept;
  StopMatcher& operator=(StopMatcher&&) noexcept;

  struct Verdict {
    std::string_view piece;  // text that became final with this token (valid until the next call)
    std::optional<StopReason> stop;
  };
  // One sampled token. `last_slot`: the sequence has no room for a token after this one.
  Verdict push(int32_t id, bool last_slot);
  // The caller ends the generation early (cancellation, error): flushes held-back text.
  std::string_view finish(StopReason why);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::string& text() const { return text_; }  // everything final so far (stop string removed)
  bool done() const { return done_; }
  StopReason reason() const { return reason_; }

 private:
  bool known(int32_t id) const;  // the tokenizer has a text for id
  const Tokenizer* tok_;
  StopParams p_;
  int32_t eos_;
  std::unique_ptr<StreamDecoder> stream_;
  size_t max_stop_ = 0;
  std::string all_;       // every decoded byte
  std::string text_;      // the part handed out
  std::vector<int32_t> tokens_;
  bool done_ = false;
  StopReason reason_ = StopReason::max_tokens;
};

struct GenerateParams {
  int max_new_tokens = 256;
  SamplerParams sampler;
  bool stop_on_eos = true;
  int32_t eos_id = -1;                    // −1 = the tokenizer's eos_id() (no EOS stop without one)
  std::vector<std::string> stop_strings;  // generation stops once the text contains one (excluded)
  std::vector<int32_t> stop_token_ids;
  int prefill_chunk = 0;                  // 0 = the whole prompt in one step
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token included when it was EOS / a stop id)
  std::vector<SampleResult> logprobs;  // per token when sampler.logprobs ≥ 0
  std::string text;             // decoded text (stop string removed); empty without a tokenizer
  StopReason reason = StopReason::max_tokens;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Called once per generated token with its id and the newly complete text (may be empty);
// return false to stop (reason = cancelled).
using TokenCallback = std::function<bool(int32_t id, std::string_view piece)>;

// `prompt` (≥ 1 token) is appended to the session (which may already hold earlier turns); every
// generated token — the last one included — is in the session afterwards. The session keeps no
// logits (the backend samples inside its steps). Throws what Session::append throws (invalid ids,
// context overflow before any token is generated) and Error(invalid_argument) for bad sampler or
// stop parameters; running into the context limit while generating ends with reason context_full.
GenerateResult generate(Session& session, const Tokenizer* tok, std::span<const int32_t> prompt,
                        const GenerateParams& params, const TokenCallback& on_token = {});

}  // namespace dsv4
