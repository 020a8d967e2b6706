// C API: sessions, sampling and generation (capi/dsv4.h). Checks that must leave the session
// untouched (token ids, context room, sampler settings) run before the core is called, so that a
// failed call changes nothing. Usage counters are kept here, per session, for dsv4_session_get_stats.
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "capi_internal.hpp"
#include "dsv4/generate.hpp"

using namespace dsv4;
using capi::guard;
using capi::require;

namespace dsv4::capi {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_tokens(const dsv4_session* s, const int32_t* tokens, size_t n) {
  if (n == 0) fail(Status::invalid_argument, "n_tokens is 0 (at least one token is needed)");
  require(tokens, "tokens");
  const int vocab = s->model->model->config().vocab_size;
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail(Status::invalid_argument, "token {} at index {} is outside the vocabulary [0, {})", tokens[i], i, vocab);
  const int64_t room = s->s->max_context() - s->s->position();
  if (static_cast<int64_t>(n) > room)
    fail(Status::context_overflow, "{} tokens do not fit: position {} of max_context {}", n, s->s->position(),
         s->s->max_context());
}

LogitsMode to_mode(int m) {
  switch (m) {
    case DSV4_LOGITS_NONE: return LogitsMode::none;
    case DSV4_LOGITS_LAST: return LogitsMode::last;
    case DSV4_LOGITS_ALL: return LogitsMode::all;
    default: fail(Status::invalid_argument, "logits mode {} is not a dsv4_logits_mode", m);
  }
}

}  // namespace

SamplerParams to_sampler_params(const dsv4_sampler_params& c) {
  for (uint64_t r : c.reserved)
    if (r) fail(Status::invalid_argument, "dsv4_sampler_params.reserved must be zero (use dsv4_sampler_default_params)");
  SamplerParams p;
  p.temperature = c.temperature;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.repetition_penalty = c.repetition_penalty;
  p.frequency_penalty = c.frequency_penalty;
  p.presence_penalty = c.presence_penalty;
  p.seed = c.seed;
  Sampler check(p);  // validates every field now (naming it), before a session has been touched
  return p;
}

}  // namespace dsv4::capi

extern "C" {

dsv4_status dsv4_session_create(const dsv4_model* model, int64_t max_context, dsv4_session** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(model, "model");
    require(out, "out");
    if (max_context < 0) fail(Status::invalid_argument, "max_context {} is negative", max_context);
    const int64_t limit = model->model->config().max_position_embeddings;
    if (limit > 0 && max_context > limit)
      fail(Status::invalid_argument, "max_context {} exceeds the model's max_position_embeddings {}", max_context,
           limit);
    auto s = std::make_unique<dsv4_session>();
    s->model = model;
    s->s = model->model->create_session(max_context);
    *out = s.release();
  });
}

void dsv4_session_free(dsv4_session* session) { delete session; }

dsv4_status dsv4_session_append(dsv4_session* session, const int32_t* tokens, size_t n_tokens,
                                dsv4_logits_mode mode) {
  return guard([&] {
    require(session, "session");
    // A C caller may pass any int; reading it as the enum would be undefined behaviour when it is
    // not one of the values, so its bytes are read as an integer.
    std::underlying_type_t<dsv4_logits_mode> raw;
    static_assert(sizeof raw == sizeof mode);
    std::memcpy(&raw, &mode, sizeof raw);
    const LogitsMode m = capi::to_mode(static_cast<int>(raw));
    capi::check_tokens(session, tokens, n_tokens);
    const auto t0 = std::chrono::steady_clock::now();
    session->s->append(std::span<const int32_t>(tokens, n_tokens), m);
    session->stats.prefill_seconds += capi::seconds_since(t0);
    session->stats.n_prompt_tokens += static_cast<int64_t>(n_tokens);
  });
}

dsv4_status dsv4_session_prefill(dsv4_session* session, const int32_t* tokens, size_t n_tokens, int32_t chunk,
                                 dsv4_progress_callback progress, void* user_data) {
  return guard([&] {
    require(session, "session");
    if (chunk < 0) fail(Status::invalid_argument, "chunk {} is negative", chunk);
    capi::check_tokens(session, tokens, n_tokens);
    const size_t step = chunk == 0 ? n_tokens : static_cast<size_t>(chunk);
    for (size_t done = 0; done < n_tokens;) {
      const size_t n = std::min(step, n_tokens - done);
      const bool last = done + n == n_tokens;
      const auto t0 = std::chrono::steady_clock::now();
      session->s->append(std::span<const int32_t>(tokens + done, n), last ? LogitsMode::last : LogitsMode::none);
      session->stats.prefill_seconds += capi::seconds_since(t0);
      session->stats.n_prompt_tokens += static_cast<int64_t>(n);
      done += n;
      if (progress && progress(static_cast<int64_t>(done), static_cast<int64_t>(n_tokens), user_data) != 0)
        fail(Status::cancelled, "prefill cancelled by the progress callback after {} of {} tokens", done, n_tokens);
    }
  });
}

dsv4_status dsv4_session_get_logits(const dsv4_session* session, const float** logits, int64_t* rows,
                                    int64_t* n_vocab) {
  return guard([&] {
    require(session, "session");
    require(logits, "logits");
    require(rows, "rows");
    require(n_vocab, "n_vocab");
    const std::span<const float> l = session->s->logits();
    *rows = l.empty() ? 0 : session->s->logits_rows();
    *logits = l.empty() ? nullptr : l.data();
    *n_vocab = session->model->model->config().vocab_size;
  });
}

dsv4_status dsv4_session_get_tokens(const dsv4_session* session, int32_t* buf, size_t cap, size_t* n_needed) {
  return guard([&] {
    require(session, "session");
    require(n_needed, "n_needed");
    const std::vector<int32_t> t = session->s->tokens();
    capi::copy_out(t.data(), t.size(), sizeof(int32_t), false, buf, cap, n_needed, "dsv4_session_get_tokens");
  });
}

dsv4_status dsv4_session_get_stats(const dsv4_session* session, dsv4_session_stats* out) {
  return guard([&] {
    require(session, "session");
    require(out, "out");
    dsv4_session_stats st = session->stats;
    st.position = session->s->position();
    st.max_context = session->s->max_context();
    *out = st;
  });
}

dsv4_status dsv4_session_reset(dsv4_session* session) {
  return guard([&] {
    require(session, "session");
    session->s->reset();
  });
}

dsv4_status dsv4_session_truncate(dsv4_session* session, int64_t position) {
  return guard([&] {
    require(session, "session");
    const int64_t pos = session->s->position();
    if (position < 0 || position > pos)
      fail(Status::invalid_argument, "dsv4_session_truncate: position {} is outside [0, {}]", position, pos);
    session->s->truncate(position);  // Error(invalid_argument) naming the rollback bound; then unchanged
  });
}

dsv4_status dsv4_session_fork(const dsv4_session* session, dsv4_session** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(session, "session");
    require(out, "out");
    auto s = std::make_unique<dsv4_session>();
    s->model = session->model;
    s->s = session->s->fork();
    *out = s.release();
  });
}

// ---- sampling ------------------------------------------------------------------------------------

dsv4_sampler_params dsv4_sampler_default_params(void) {
  const SamplerParams d;
  dsv4_sampler_params p{};
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.min_p = d.min_p;
  p.repetition_penalty = d.repetition_penalty;
  p.frequency_penalty = d.frequency_penalty;
  p.presence_penalty = d.presence_penalty;
  p.seed = d.seed;
  return p;
}

dsv4_status dsv4_sampler_create(const dsv4_sampler_params* params, dsv4_sampler** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(params, "params");
    require(out, "out");
    *out = new dsv4_sampler{Sampler(capi::to_sampler_params(*params))};
  });
}

void dsv4_sampler_free(dsv4_sampler* sampler) { delete sampler; }

dsv4_status dsv4_sampler_sample(dsv4_sampler* sampler, const float* logits, size_t n_vocab, const int32_t* history,
                                size_t n_history, int32_t* token) {
  return guard([&] {
    require(sampler, "sampler");
    require(logits, "logits");
    require(token, "token");
    if (n_vocab == 0) fail(Status::invalid_argument, "n_vocab is 0");
    if (n_history) require(history, "history");
    *token = sampler->sampler.sample(std::span<const float>(logits, n_vocab),
                                     std::span<const int32_t>(history, n_history));
  });
}

dsv4_status dsv4_session_sample(const dsv4_session* session, dsv4_sampler* sampler, int32_t* token) {
  return guard([&] {
    require(session, "session");
    require(sampler, "sampler");
    require(token, "token");
    const std::span<const float> l = session->s->logits();
    if (l.empty()) fail(Status::invalid_argument, "the session holds no logits (append with DSV4_LOGITS_LAST first)");
    const size_t vocab = static_cast<size_t>(session->model->model->config().vocab_size);
    *token = sampler->sampler.sample(l.subspan(l.size() - vocab, vocab), session->s->tokens());
  });
}

// ---- generation ----------------------------------------------------------------------------------

dsv4_generate_params dsv4_generate_default_params(void) {
  const GenerateParams d;
  dsv4_generate_params p{};
  p.max_new_tokens = d.max_new_tokens;
  p.sampler = dsv4_sampler_default_params();
  p.stop_on_eos = d.stop_on_eos;
  p.stop_strings = nullptr;
  p.n_stop_strings = 0;
  p.prefill_chunk = d.prefill_chunk;
  p.stop_token_ids = nullptr;
  p.n_stop_token_ids = 0;
  return p;
}

dsv4_status dsv4_session_generate(dsv4_session* session, const int32_t* prompt, size_t n_prompt,
                                  const dsv4_generate_params* params, dsv4_token_callback callback, void* user_data,
                                  dsv4_generate_result* result) {
  return guard([&] {
    require(session, "session");
    const dsv4_generate_params c = params ? *params : dsv4_generate_default_params();
    for (uint64_t r : c.reserved)
      if (r) fail(Status::invalid_argument, "dsv4_generate_params.reserved must be zero (use dsv4_generate_default_params)");
    if (c.max_new_tokens < 0) fail(Status::invalid_argument, "max_new_tokens {} is negative", c.max_new_tokens);
    if (c.prefill_chunk < 0) fail(Status::invalid_argument, "prefill_chunk {} is negative", c.prefill_chunk);
    if (c.n_stop_strings) require(c.stop_strings, "stop_strings");
    if (c.n_stop_token_ids) require(c.stop_token_ids, "stop_token_ids");
    GenerateParams g;
    g.max_new_tokens = c.max_new_tokens;
    g.sampler = capi::to_sampler_params(c.sampler);
    g.stop_on_eos = c.stop_on_eos;
    // Without a tokenizer the core knows no EOS id; the config's is the model's own.
    if (!session->model->tokenizer.tok) g.eos_id = session->model->model->config().eos_token_id;
    for (size_t i = 0; i < c.n_stop_strings; ++i) {
      if (!c.stop_strings[i]) fail(Status::invalid_argument, "stop_strings[{}] is NULL", i);
      if (!*c.stop_strings[i]) fail(Status::invalid_argument, "stop_strings[{}] is empty", i);
      g.stop_strings.emplace_back(c.stop_strings[i]);
    }
    g.prefill_chunk = c.prefill_chunk;
    const int vocab = session->model->model->config().vocab_size;
    for (size_t i = 0; i < c.n_stop_token_ids; ++i) {
      if (c.stop_token_ids[i] < 0 || c.stop_token_ids[i] >= vocab)
        fail(Status::invalid_argument, "stop_token_ids[{}] = {} is outside the vocabulary [0, {})", i,
             c.stop_token_ids[i], vocab);
      g.stop_token_ids.push_back(c.stop_token_ids[i]);
    }
    if (!g.stop_strings.empty() && !session->model->tokenizer.tok)
      fail(Status::invalid_argument, "stop strings need the model's tokenizer (its folder has no tokenizer.json)");
    capi::check_tokens(session, prompt, n_prompt);

    TokenCallback on_token;
    if (callback)
      on_token = [&](int32_t id, std::string_view piece) { return callback(id, piece.data(), piece.size(), user_data) == 0; };
    const GenerateResult r = generate(*session->s, session->model->tokenizer.tok,
                                      std::span<const int32_t>(prompt, n_prompt), g, on_token);
    dsv4_session_stats& st = session->stats;
    st.n_prompt_tokens += r.prompt_tokens;
    st.n_generated_tokens += static_cast<int64_t>(r.tokens.size());
    st.prefill_seconds += r.prefill_seconds;
    st.decode_seconds += r.decode_seconds;
    st.n_generate_calls += 1;
    if (result) {
      dsv4_generate_result out{};
      out.n_prompt_tokens = r.prompt_tokens;
      out.n_generated_tokens = static_cast<int64_t>(r.tokens.size());
      out.stop_reason = static_cast<int32_t>(r.reason);
      out.prefill_seconds = r.prefill_seconds;
      out.decode_seconds = r.decode_seconds;
      *result = out;
    }
  });
}

const char* dsv4_stop_reason_name(int32_t reason) {
  switch (reason) {
    case DSV4_STOP_EOS: return "eos";
    case DSV4_STOP_STRING: return "stop_string";
    case DSV4_STOP_MAX_TOKENS: return "max_tokens";
    case DSV4_STOP_CONTEXT_FULL: return "context_full";
    case DSV4_STOP_CANCELLED: return "cancelled";
    case DSV4_STOP_TOKEN: return "stop_token";
    case DSV4_STOP_ERROR: return "error";
  }
  return "unknown";
}

const char* dsv4_finish_reason_name(int32_t reason) {
  if (reason < DSV4_STOP_EOS || reason > DSV4_STOP_ERROR) return "unknown";
  return finish_reason_name(static_cast<StopReason>(reason));
}

}  // extern "C"

// The C stop reasons are the C++ ones, in the same order.
static_assert(DSV4_STOP_EOS == static_cast<int>(StopReason::eos));
static_assert(DSV4_STOP_STRING == static_cast<int>(StopReason::stop_string));
static_assert(DSV4_STOP_MAX_TOKENS == static_cast<int>(StopReason::max_tokens));
static_assert(DSV4_STOP_CONTEXT_FULL == static_cast<int>(StopReason::context_full));
static_assert(DSV4_STOP_CANCELLED == static_cast<int>(StopReason::cancelled));
static_assert(DSV4_STOP_TOKEN == static_cast<int>(StopReason::stop_token));
static_assert(DSV4_STOP_ERROR == static_cast<int>(StopReason::error));
