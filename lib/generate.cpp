// The generation loop (contract in include/dsv4/generate.hpp). StopMatcher: decode → stop checks →
// hold back text that could still become a stop string (never ending a piece inside a UTF-8
// sequence), so no consumer ever sees any part of a stop string. generate(): prefill in chunks,
// the last chunk samples; then one step per token that feeds the previous token and samples the
// next; the final token is fed without sampling so the session holds every generated token.
#include "dsv4/generate.hpp"

#include <algorithm>
#include <chrono>

#include "dsv4/backend.hpp"
#include "dsv4/error.hpp"
#include "dsv4/tokenizer.hpp"

namespace dsv4 {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::stop_string: return "stop_string";
    case StopReason::max_tokens: return "max_tokens";
    case StopReason::context_full: return "context_full";
    case StopReason::cancelled: return "cancelled";
    case StopReason::stop_token: return "stop_token";
    case StopReason::error: return "error";
  }
  return "unknown";
}

const char* finish_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos:
    case StopReason::stop_string:
    case StopReason::stop_token: return "stop";
    case StopReason::max_tokens:
    case StopReason::context_full: return "length";
    case StopReason::cancelled: return "abort";
    case StopReason::error: return "error";
  }
  return "error";
}

namespace {
constexpr size_t kMaxStopBytes = 4096;
}

StopMatcher::StopMatcher(const Tokenizer* tok, const StopParams& p) : tok_(tok), p_(p) {
  if (p_.max_tokens < 0) fail(Status::invalid_argument, "max_tokens {} must be ≥ 0", p_.max_tokens);
  if (!tok && !p_.stop_strings.empty())
    fail(Status::invalid_argument, "stop strings need a tokenizer (the model folder has no tokenizer.json)");
  for (const auto& s : p_.stop_strings) {
    if (s.empty()) fail(Status::invalid_argument, "stop strings must not be empty");
    if (s.size() > kMaxStopBytes)
      fail(Status::invalid_argument, "a stop string of {} bytes exceeds the limit of {}", s.size(), kMaxStopBytes);
    max_stop_ = std::max(max_stop_, s.size());
  }
  eos_ = p_.eos_id >= 0 ? p_.eos_id : (tok ? tok->eos_id() : -1);
  if (tok) stream_ = std::make_unique<StreamDecoder>(*tok);
}

StopMatcher::~StopMatcher() = default;

bool StopMatcher::known(int32_t id) const {
  return tok_ && id >= 0 && static_cast<size_t>(id) < tok_->vocab_size();
}
StopMatcher::StopMatcher(StopMatcher&&) noexcept = default;
StopMatcher& StopMatcher::operator=(StopMatcher&&) noexcept = default;

StopMatcher::Verdict StopMatcher::push(int32_t id, bool last_slot) {
  if (done_) fail(Status::internal, "StopMatcher::push after the generation ended");
  tokens_.push_back(id);
  const size_t emitted = text_.size();
  std::optional<StopReason> stop;
  if (p_.stop_on_eos && id == eos_) {
    stop = StopReason::eos;
  } else if (std::find(p_.stop_token_ids.begin(), p_.stop_token_ids.end(), id) != p_.stop_token_ids.end()) {
    stop = StopReason::stop_token;
    if (stream_ && known(id)) all_ += stream_->push(id);
  } else if (stream_ && known(id)) {
    // Ids past the tokenizer (the model's padding rows) have no text; a model may still sample them.
    all_ += stream_->push(id);
  }
  size_t visible = all_.size();
  if (!stop && !p_.stop_strings.empty()) {
    // Search only where a new match can start: it must end in the newly decoded bytes.
    const size_t from = emitted >= max_stop_ ? emitted - max_stop_ : 0;
    size_t hit = std::string::npos;
    for (const auto& s : p_.stop_strings) hit = std::min(hit, all_.find(s, from));
    if (hit != std::string::npos) {
      stop = StopReason::stop_string;
      all_.resize(hit);
      visible = hit;
    } else {
      visible = all_.size() >= max_stop_ ? std::max(emitted, all_.size() - (max_stop_ - 1)) : emitted;
      // The hold-back is counted in bytes: never end a piece inside a UTF-8 sequence.
      while (visible > emitted && (static_cast<unsigned char>(all_[visible]) & 0xC0) == 0x80) --visible;
    }
  }
  if (!stop && static_cast<int>(tokens_.size()) >= p_.max_tokens) stop = StopReason::max_tokens;
  if (!stop && last_slot) stop = StopReason::context_full;
  if (stop) {
    if (stream_ && *stop != StopReason::stop_string) all_ += stream_->flush();
    visible = all_.size();
    done_ = true;
    reason_ = *stop;
  }
  text_.append(all_, emitted, visible - emitted);
  return {std::string_view(text_).substr(emitted), stop};
}

std::string_view StopMatcher::finish(StopReason why) {
  const size_t emitted = text_.size();
  if (!done_) {
    if (stream_) all_ += stream_->flush();
    text_.append(all_, emitted, all_.size() - emitted);
    done_ = true;
    reason_ = why;
  }
  return std::string_view(text_).substr(emitted);
}

GenerateResult generate(Session& session, const Tokenizer* tok, std::span<const int32_t> prompt,
                        const GenerateParams& params, const TokenCallback& on_token) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) fail(Status::invalid_argument, "generate: empty prompt");
  if (params.max_new_tokens < 0) fail(Status::invalid_argument, "generate: max_new_tokens {} < 0", params.max_new_tokens);
  if (params.prefill_chunk < 0) fail(Status::invalid_argument, "generate: prefill_chunk {} < 0", params.prefill_chunk);
  StopParams sp;
  sp.max_tokens = params.max_new_tokens;
  sp.stop_on_eos = params.stop_on_eos;
  sp.eos_id = params.eos_id;
  sp.stop_strings = params.stop_strings;
  sp.stop_token_ids = params.stop_token_ids;
  StopMatcher stop(tok, sp);
  Sampler sampler(params.sampler);
  SamplerState state(params.sampler.seed, SamplerState::needs_counts(params.sampler));
  state.add_prompt(prompt);  // the repetition penalty sees the prompt; OpenAI penalties do not
  GenerateResult res;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t max_ctx = session.max_context();

  // Prefill; the last chunk samples the first token unless nothing is to be generated.
  const auto t0 = clock::now();
  const size_t chunk = params.prefill_chunk > 0 ? static_cast<size_t>(params.prefill_chunk) : prompt.size();
  const bool want_tokens = params.max_new_tokens > 0 && session.position() + static_cast<int64_t>(prompt.size()) < max_ctx;
  int32_t id = -1;
  for (size_t b = 0; b < prompt.size(); b += chunk) {
    const size_t n = std::min(chunk, prompt.size() - b);
    const bool last = b + n == prompt.size();
    if (!last || !want_tokens) {
      session.append(prompt.subspan(b, n), last ? LogitsMode::last : LogitsMode::none);
      continue;
    }
    ForwardChunk c;
    c.tokens = prompt.subspan(b, n);
    c.sampler = &sampler;
    c.sampler_state = &state;
    const ChunkResult r = session.step(c);
    id = r.sample.id;
    if (params.sampler.logprobs >= 0) res.logprobs.push_back(r.sample);
  }
  res.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if (!want_tokens) {
    res.reason = params.max_new_tokens == 0 ? StopReason::max_tokens : StopReason::context_full;
    return res;
  }

  for (;;) {
    // `id` would take position p; it is the last one when p + 1 reaches the context.
    const StopMatcher::Verdict v = stop.push(id, session.position() + 1 >= max_ctx);
    const bool cancel = on_token && !on_token(id, v.piece) && !v.stop;  // a decided stop keeps its reason
    const auto td = clock::now();
    ForwardChunk c;
    c.tokens = std::span<const int32_t>(&id, 1);
    if (v.stop || cancel) {
      session.step(c);  // feed the final token: the session holds every generated token
      res.decode_seconds += std::chrono::duration<double>(clock::now() - td).count();
      if (cancel) stop.finish(StopReason::cancelled);
      break;
    }
    c.sampler = &sampler;
    c.sampler_state = &state;
    const ChunkResult r = session.step(c);
    res.decode_seconds += std::chrono::duration<double>(clock::now() - td).count();
    id = r.sample.id;
    if (params.sampler.logprobs >= 0) res.logprobs.push_back(r.sample);
  }
  res.tokens = stop.tokens();
  res.text = stop.text();
  res.reason = stop.reason();
  return res;
}

}  // namespace dsv4
