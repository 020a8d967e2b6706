// OpenAI response pieces (contract in openai_response.hpp).
#include "openai_response.hpp"

#include <chrono>
#include <cmath>
#include <random>

namespace dsv4::server {
namespace {

// JSON has no −inf: a token the model gives no probability at all reads −9999, as vLLM writes it.
double finite_logprob(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

Json bytes_of(const Tokenizer& tok, int32_t id) {
  Json b = Json::array();
  if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) return b;
  for (unsigned char c : tok.token_bytes(id)) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse(const Json& j) { return "data: " + dump(j) + "\n\n"; }

Json error_body(const ApiError& e) {
  Json err = Json::object();
  err["message"] = e.what();
  err["type"] = e.type();
  err["param"] = e.param().empty() ? Json(nullptr) : Json(e.param());
  err["code"] = e.code().empty() ? Json(nullptr) : Json(e.code());
  return Json{{"error", std::move(err)}};
}

std::string new_request_id(std::string_view prefix) {
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  for (int i = 0; i < 32; ++i) id += kHex[g() & 15];
  return id;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Json usage_json(int64_t prompt, int64_t completion, int64_t reasoning) {
  return Json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion},
              {"completion_tokens_details", Json{{"reasoning_tokens", reasoning}}}};
}

std::string finish_reason(StopReason r) { return finish_reason_name(r); }

std::string token_text(const Tokenizer& tok, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) return "token_id:" + std::to_string(id);
  const int32_t one[1] = {id};
  return tok.decode(one);
}

Json chat_logprob_entry(const Tokenizer& tok, const SampleResult& r, int top_n) {
  Json top = Json::array();
  for (size_t i = 0; i < r.top.size() && static_cast<int>(i) < top_n; ++i)
    top.push_back(Json{{"token", token_text(tok, r.top[i].id)},
                       {"logprob", finite_logprob(r.top[i].logprob)},
                       {"bytes", bytes_of(tok, r.top[i].id)}});
  return Json{{"token", token_text(tok, r.id)},
              {"logprob", finite_logprob(r.logprob)},
              {"bytes", bytes_of(tok, r.id)},
              {"top_logprobs", std::move(top)}};
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void CompletionLogprobs::add(const Tokenizer& tok, const SampleResult& r, int top_n) {
  const std::string text = token_text(tok, r.id);
  tokens_.push_back(text);
  logprobs_.push_back(finite_logprob(r.logprob));
  Json top = Json::object();
  for (size_t i = 0; i < r.top.size() && static_cast<int>(i) < top_n; ++i) {
    const std::string t = token_text(tok, r.top[i].id);
    if (!top.contains(t)) top[t] = finite_logprob(r.top[i].logprob);  // best first: keep the first
  }
  if (top_n > 0 && !top.contains(text)) top[text] = finite_logprob(r.logprob);  // vLLM: the sampled one too
  top_.push_back(std::move(top));
  offsets_.push_back(offset_);
  offset_ += utf8_length(text);
}

Json CompletionLogprobs::take() {
  Json j{{"tokens", std::move(tokens_)},
         {"token_logprobs", std::move(logprobs_)},
         {"top_logprobs", std::move(top_)},
         {"text_offset", std::move(offsets_)}};
  tokens_ = Json::array();
  logprobs_ = Json::array();
  top_ = Json::array();
  offsets_ = Json::array();
  return j;
}

}  // namespace dsv4::server
