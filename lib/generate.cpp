// The generation loop (contract in include/dsv4/generate.hpp): prefill in chunks, then sample →
// stop checks → stream → decode one token. Text that could still become a stop string is held
// back, so the callback never sees any part of a stop string.
#include "dsv4/generate.hpp"

#include <algorithm>
#include <chrono>
#include <optional>

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
  }
  return "unknown";
}

GenerateResult generate(Session& session, const Tokenizer* tok, std::span<const int32_t> prompt,
                        const GenerateParams& params, const TokenCallback& on_token) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) fail(Status::invalid_argument, "generate: empty prompt");
  if (params.max_new_tokens < 0) fail(Status::invalid_argument, "generate: max_new_tokens {} < 0", params.max_new_tokens);
  if (!tok && !params.stop_strings.empty())
    fail(Status::invalid_argument, "generate: stop strings need a tokenizer (the model folder has no tokenizer.json)");
  Sampler sampler(params.sampler);
  GenerateResult res;
  res.prompt_tokens = static_cast<int64_t>(prompt.size());

  const auto t0 = clock::now();
  const size_t chunk = params.prefill_chunk > 0 ? static_cast<size_t>(params.prefill_chunk) : prompt.size();
  for (size_t b = 0; b < prompt.size(); b += chunk) {
    const size_t n = std::min(chunk, prompt.size() - b);
    session.append(prompt.subspan(b, n), b + n == prompt.size() ? LogitsMode::last : LogitsMode::none);
  }
  const auto t1 = clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  const int32_t eos = params.eos_id >= 0 ? params.eos_id : (tok ? tok->eos_id() : -1);
  std::optional<StreamDecoder> stream;
  if (tok) stream.emplace(*tok);
  size_t max_stop = 0;
  for (const auto& s : params.stop_strings) max_stop = std::max(max_stop, s.size());
  std::string text;      // every decoded byte so far
  size_t emitted = 0;    // bytes of `text` already handed to the callback

  for (int i = 0; i < params.max_new_tokens; ++i) {
    const auto all = session.logits();
    const size_t vocab = all.size() / static_cast<size_t>(std::max<int64_t>(1, session.logits_rows()));
    const auto row = all.subspan(all.size() - vocab);
    const int32_t id = sampler.sample(row, session.tokens());
    res.tokens.push_back(id);
    bool stop = false;
    if (params.stop_on_eos && id == eos) {
      res.reason = StopReason::eos;
      stop = true;
    } else if (stream) {
      text += stream->push(id);
    }
    size_t visible = text.size();
    if (!stop && !params.stop_strings.empty()) {
      // Search only where a new match can start: it must end in the newly decoded bytes.
      const size_t from = emitted >= max_stop ? emitted - max_stop : 0;
      size_t hit = std::string::npos;
      for (const auto& s : params.stop_strings)
        if (!s.empty()) hit = std::min(hit, text.find(s, from));
      if (hit != std::string::npos) {
        res.reason = StopReason::stop_string;
        text.resize(hit);
        visible = hit;
        stop = true;
      } else {
        visible = text.size() >= max_stop ? std::max(emitted, text.size() - (max_stop - 1)) : emitted;
        // The hold-back is counted in bytes: never end a piece inside a UTF-8 sequence.
        while (visible > emitted && (static_cast<unsigned char>(text[visible]) & 0xC0) == 0x80) --visible;
      }
    }
    if (!stop && i + 1 == params.max_new_tokens) {
      res.reason = StopReason::max_tokens;
      stop = true;
    }
    if (!stop && session.position() >= session.max_context()) {
      res.reason = StopReason::context_full;
      stop = true;
    }
    if (stop) {
      if (stream && res.reason != StopReason::stop_string) text += stream->flush();
      visible = text.size();
    }
    const std::string_view piece(text.data() + emitted, visible - emitted);
    emitted = visible;
    if (on_token && !on_token(id, piece) && !stop) {  // a stop already decided keeps its reason
      res.reason = StopReason::cancelled;
      break;
    }
    if (stop) break;
    const auto td = clock::now();
    session.append({&id, 1}, LogitsMode::last);
    res.decode_seconds += std::chrono::duration<double>(clock::now() - td).count();
  }
  if (params.max_new_tokens == 0) res.reason = StopReason::max_tokens;
  res.text = text;
  return res;
}

}  // namespace dsv4
