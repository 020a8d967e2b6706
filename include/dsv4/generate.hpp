// The generation loop on a Session: prefill the prompt, then sample / decode until EOS, a stop
// string, max_new_tokens, the context limit, or the callback asks to stop. Streams text pieces that
// are complete UTF-8 (through the tokenizer's StreamDecoder) with every token.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "dsv4/engine.hpp"
#include "dsv4/sampler.hpp"

namespace dsv4 {

struct GenerateParams {
  int max_new_tokens = 256;
  SamplerParams sampler;
  bool stop_on_eos = true;
  int32_t eos_id = -1;                    // −1 = the tokenizer's eos_id() (no EOS stop without one)
  std::vector<std::string> stop_strings;  // generation stops once the text contains one (excluded)
  int prefill_chunk = 0;                  // 0 = the whole prompt in one append
};

enum class StopReason { eos, stop_string, max_tokens, context_full, cancelled };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token included when it was EOS)
  std::string text;             // decoded text (stop string removed); empty without a tokenizer
  StopReason reason = StopReason::max_tokens;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Called once per generated token with its id and the newly complete text (may be empty);
// return false to stop (reason = cancelled).
using TokenCallback = std::function<bool(int32_t id, std::string_view piece)>;

// `prompt` (≥ 1 token) is appended to the session (which may already hold earlier turns).
// Throws what Session::append throws (invalid ids, context overflow before any token is generated)
// and Error(invalid_argument) for bad sampler parameters; running into the context limit while
// generating ends with reason context_full instead.
GenerateResult generate(Session& session, const Tokenizer* tok, std::span<const int32_t> prompt,
                        const GenerateParams& params, const TokenCallback& on_token = {});

}  // namespace dsv4
