// HTTP request bodies of `dsv4 serve` (examples/server/openai_request.cpp): arbitrary bytes →
// parse_body, then — by the first byte — the completions, chat, tokenize or detokenize validation
// with the real tokenizer (data/tokenizer/tokenizer.json, or $DSV4_FUZZ_TOKENIZER) and small limits.
// Invariants: only server::ApiError (a 4xx status) or dsv4::Error escapes; an accepted request's
// token ids lie in the vocabulary, its prompts fit the context with max_tokens ≥ 1, n and the
// prompt count respect the limits.
#include <cstdint>
#include <cstdlib>

#include "api_error.hpp"
#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"
#include "fuzz_util.hpp"
#include "openai_request.hpp"

using namespace dsv4;

namespace {
const Tokenizer& real_tokenizer() {
  static const Tokenizer t = [] {
    const char* p = std::getenv("DSV4_FUZZ_TOKENIZER");
    return Tokenizer::from_file(p && *p ? p : DSV4_FUZZ_TOKENIZER);
  }();
  return t;
}

void check_ids(const std::vector<int32_t>& ids, int32_t vocab) {
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Tokenizer& tok = real_tokenizer();
  auto& tally = dsv4_fuzz::tally("server request bodies");
  server::RequestLimits lim;
  lim.max_model_len = 4096;
  lim.max_tokens_limit = (data[0] & 4) ? 64 : 0;
  lim.max_n = 4;
  lim.vocab_size = static_cast<int32_t>(tok.vocab_size());
  lim.max_prompts = 8;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const server::Json j = server::parse_body(body);
    (void)server::requested_model(j);
    switch (data[0] & 3) {
      case 0: {
        const server::CompletionRequest r = server::parse_completion_request(j, tok, lim);
        FUZZ_CHECK(!r.prompts.empty() && static_cast<int>(r.prompts.size()) <= lim.max_prompts);
        for (const auto& p : r.prompts) {
          FUZZ_CHECK(!p.empty());
          check_ids(p, lim.vocab_size);
          FUZZ_CHECK(static_cast<int64_t>(p.size()) + r.params.stop.max_tokens <= lim.max_model_len);
        }
        FUZZ_CHECK(r.params.stop.max_tokens >= 1 && r.params.n >= 1 && r.params.n <= lim.max_n);
        break;
      }
      case 1: {
        const server::ChatRequest r = server::parse_chat_request(j, tok, lim);
        FUZZ_CHECK(!r.prompt.empty());
        check_ids(r.prompt, lim.vocab_size);
        FUZZ_CHECK(static_cast<int64_t>(r.prompt.size()) + r.params.stop.max_tokens <= lim.max_model_len);
        FUZZ_CHECK(r.params.stop.max_tokens >= 1 && r.params.n >= 1 && r.params.n <= lim.max_n);
        break;
      }
      case 2:
        check_ids(server::parse_tokenize_request(j, tok, lim), lim.vocab_size);
        break;
      default:
        check_ids(server::parse_detokenize_request(j, tok), lim.vocab_size);
        break;
    }
    tally.ok();
  } catch (const server::ApiError& e) {
    FUZZ_CHECK(e.status() >= 400 && e.status() < 500);
    tally.error(Status::invalid_argument);
  } catch (const Error& e) {
    tally.error(e.status());
  }
  return 0;
}
