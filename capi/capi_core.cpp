// C API: versions, errors, models and tokenizers (capi/dsv4.h). Each entry point validates its
// pointers, then calls the C++ core inside capi::guard so that exceptions become statuses.
// The only mutable state outside handles is the thread-local error text, which the API defines.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "capi_internal.hpp"

namespace dsv4::capi {
namespace {

// The C enum mirrors dsv4::Status value for value; a mismatch would mis-report every error.
static_assert(DSV4_OK == static_cast<int>(Status::ok));
static_assert(DSV4_ERR_INVALID_ARGUMENT == static_cast<int>(Status::invalid_argument));
static_assert(DSV4_ERR_IO == static_cast<int>(Status::io));
static_assert(DSV4_ERR_FORMAT == static_cast<int>(Status::format));
static_assert(DSV4_ERR_UNSUPPORTED == static_cast<int>(Status::unsupported));
static_assert(DSV4_ERR_OUT_OF_MEMORY == static_cast<int>(Status::out_of_memory));
static_assert(DSV4_ERR_CONTEXT_OVERFLOW == static_cast<int>(Status::context_overflow));
static_assert(DSV4_ERR_BACKEND == static_cast<int>(Status::backend));
static_assert(DSV4_ERR_CANCELLED == static_cast<int>(Status::cancelled));
static_assert(DSV4_ERR_INTERNAL == static_cast<int>(Status::internal));
static_assert(DSV4_ERR_BUFFER_TOO_SMALL == static_cast<int>(Status::buffer_too_small));
static_assert(DSV4_ERR_BUSY == static_cast<int>(Status::busy));

// Layout of the structs that grew by carving fields out of `reserved` (ABI rule of dsv4.h): the
// size and the offset of what follows must be those of release 0.1 (LP64).
#if defined(__LP64__)
static_assert(sizeof(dsv4_model_params) == 104 && offsetof(dsv4_model_params, state_budget_bytes) == 40 &&
              offsetof(dsv4_model_params, reserved) == 80);
static_assert(sizeof(dsv4_generate_params) == 176 && offsetof(dsv4_generate_params, stop_token_ids) == 112);
#endif

#if defined(DSV4_PROJECT_VERSION_MAJOR)
static_assert(DSV4_VERSION_MAJOR == DSV4_PROJECT_VERSION_MAJOR && DSV4_VERSION_MINOR == DSV4_PROJECT_VERSION_MINOR &&
                  DSV4_VERSION_PATCH == DSV4_PROJECT_VERSION_PATCH,
              "capi/dsv4.h DSV4_VERSION_* must match project(VERSION) in CMakeLists.txt");
#endif

// dsv4_last_error() text; thread-local by contract so that threads never see each other's errors.
thread_local std::string t_last_error;

// "key=value,key=value" → pairs (blanks around keys and values trimmed; empty entries skipped).
std::vector<std::pair<std::string, std::string>> parse_backend_params(const char* text) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!text) return out;
  const std::string_view all(text);
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  size_t at = 0;
  while (at <= all.size()) {
    const size_t end = std::min(all.find(',', at), all.size());
    const std::string_view item = trim(all.substr(at, end - at));
    at = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || trim(item.substr(0, eq)).empty())
      fail(Status::invalid_argument, "dsv4_model_params.backend_params: '{}' is not key=value", item);
    out.emplace_back(std::string(trim(item.substr(0, eq))), std::string(trim(item.substr(eq + 1))));
  }
  return out;
}

LogLevel to_log_level(int32_t level) {
  switch (level) {
    case DSV4_LOG_FROM_ENV: return Logger::from_env(LogLevel::warn).level();
    case DSV4_LOG_DEBUG: return LogLevel::debug;
    case DSV4_LOG_INFO: return LogLevel::info;
    case DSV4_LOG_WARN: return LogLevel::warn;
    case DSV4_LOG_ERROR: return LogLevel::error;
    case DSV4_LOG_OFF: return LogLevel::off;
    default: fail(Status::invalid_argument, "dsv4_model_params.log_level {} is not a dsv4_log_level", level);
  }
}

}  // namespace

dsv4_status set_error(dsv4_status st, std::string_view message) {
  try {
    t_last_error.assign(message);
  } catch (...) {
    t_last_error.clear();  // no memory for the text: the status still tells what happened
  }
  return st;
}

void clear_error() { t_last_error.clear(); }

void copy_out(const void* src, size_t n_elems, size_t elem_size, bool text, void* buf, size_t cap, size_t* n_needed,
              const char* what) {
  *n_needed = n_elems;
  const size_t need = n_elems + (text ? 1 : 0);
  if (!buf || cap < need)
    throw Error(static_cast<Status>(DSV4_ERR_BUFFER_TOO_SMALL),
                fmt::format("{}: buffer too small (capacity {}, need {})", what, cap, need));
  if (n_elems) std::memcpy(buf, src, n_elems * elem_size);
  if (text) static_cast<char*>(buf)[n_elems] = '\0';
}

}  // namespace dsv4::capi

using namespace dsv4;
using capi::guard;
using capi::require;

extern "C" {

const char* dsv4_version(void) {
  return DSV4_VERSION_STRING;
}

uint32_t dsv4_abi_version(void) { return DSV4_ABI_VERSION; }

const char* dsv4_last_error(void) { return capi::t_last_error.c_str(); }

const char* dsv4_status_name(dsv4_status status) {
  switch (status) {
    case DSV4_OK: return "ok";
    case DSV4_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case DSV4_ERR_IO: return "io";
    case DSV4_ERR_FORMAT: return "format";
    case DSV4_ERR_UNSUPPORTED: return "unsupported";
    case DSV4_ERR_OUT_OF_MEMORY: return "out_of_memory";
    case DSV4_ERR_CONTEXT_OVERFLOW: return "context_overflow";
    case DSV4_ERR_BACKEND: return "backend";
    case DSV4_ERR_CANCELLED: return "cancelled";
    case DSV4_ERR_INTERNAL: return "internal";
    case DSV4_ERR_BUFFER_TOO_SMALL: return "buffer_too_small";
    case DSV4_ERR_BUSY: return "busy";
  }
  return "unknown";
}

// ---- model ---------------------------------------------------------------------------------------

dsv4_model_params dsv4_model_default_params(void) {
  const LoadOptions d;
  dsv4_model_params p{};
  p.backend = "cpu";
  p.experts_per_token = d.experts_per_token;
  p.n_threads = 0;  // the cpu backend's default: hardware concurrency
  p.device_ids = nullptr;
  p.n_device_ids = 0;
  p.load_tokenizer = d.load_tokenizer;
  p.log_level = DSV4_LOG_FROM_ENV;
  p.state_budget_bytes = d.state_budget_bytes;
  p.max_sequences = d.max_sequences;
  p.max_context = d.max_context;
  p.rollback_tokens = d.rollback_tokens;
  p.backend_params = nullptr;
  p.numerics = DSV4_NUMERICS_REFERENCE;
  return p;
}

dsv4_status dsv4_model_load(const char* path, const dsv4_model_params* params, dsv4_model** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(path, "path");
    require(out, "out");
    const dsv4_model_params p = params ? *params : dsv4_model_default_params();
    for (uint64_t r : p.reserved)
      if (r) fail(Status::invalid_argument, "dsv4_model_params.reserved must be zero (use dsv4_model_default_params)");
    if (p.n_threads < 0) fail(Status::invalid_argument, "dsv4_model_params.n_threads {} is negative", p.n_threads);
    if (p.experts_per_token < 0)
      fail(Status::invalid_argument, "dsv4_model_params.experts_per_token {} is negative", p.experts_per_token);
    if (p.n_device_ids && !p.device_ids)
      fail(Status::invalid_argument, "dsv4_model_params.device_ids is NULL but n_device_ids is {}", p.n_device_ids);
    if (p.numerics != DSV4_NUMERICS_REFERENCE && p.numerics != DSV4_NUMERICS_OFFICIAL)
      fail(Status::invalid_argument, "dsv4_model_params.numerics {} is not a dsv4_numerics (0 reference, 1 official)",
           p.numerics);
    if (p.max_sequences < 0)
      fail(Status::invalid_argument, "dsv4_model_params.max_sequences {} is negative", p.max_sequences);
    if (p.max_context < 0)
      fail(Status::invalid_argument, "dsv4_model_params.max_context {} is negative", p.max_context);
    if (p.rollback_tokens < 0)
      fail(Status::invalid_argument, "dsv4_model_params.rollback_tokens {} is negative", p.rollback_tokens);
    LoadOptions opt;
    opt.backend = p.backend ? p.backend : "cpu";
    opt.experts_per_token = p.experts_per_token;
    opt.device_ids.assign(p.device_ids, p.device_ids + p.n_device_ids);
    opt.load_tokenizer = p.load_tokenizer;
    opt.state_budget_bytes = static_cast<size_t>(p.state_budget_bytes);
    opt.max_sequences = p.max_sequences;
    opt.max_context = p.max_context;
    opt.rollback_tokens = p.rollback_tokens;
    opt.numerics = p.numerics == DSV4_NUMERICS_OFFICIAL ? Numerics::official : Numerics::reference;
    opt.backend_params = capi::parse_backend_params(p.backend_params);
    // n_threads is the cpu backend's "threads" setting; the other backends have no such setting.
    if (p.n_threads != 0 && opt.backend == "cpu") {
      for (const auto& [k, v] : opt.backend_params)
        if (k == "threads")
          fail(Status::invalid_argument,
               "dsv4_model_params: n_threads {} and backend_params threads={} both set the thread count", p.n_threads,
               v);
      opt.backend_params.emplace_back("threads", std::to_string(p.n_threads));
    }
    auto m = std::make_unique<dsv4_model>();
    m->log = Logger(capi::to_log_level(p.log_level));
    m->model = Model::load(path, opt, m->log);
    m->tokenizer.tok = m->model->tokenizer();
    *out = m.release();
  });
}

void dsv4_model_free(dsv4_model* model) { delete model; }

dsv4_status dsv4_model_get_info(const dsv4_model* model, dsv4_model_info* out) {
  return guard([&] {
    require(model, "model");
    require(out, "out");
    const ModelConfig& c = model->model->config();
    dsv4_model_info i{};
    i.vocab_size = c.vocab_size;
    i.hidden_size = c.hidden_size;
    i.n_layers = c.num_layers;
    i.n_heads = c.num_heads;
    i.n_routed_experts = c.n_routed_experts;
    i.experts_per_token = c.experts_per_token;
    i.config_experts_per_token = c.config_experts_per_token;
    i.bos_token_id = c.bos_token_id;
    i.eos_token_id = c.eos_token_id;
    i.max_position_embeddings = c.max_position_embeddings;
    i.has_tokenizer = model->tokenizer.tok != nullptr;
    const std::string b = model->model->backend_name();
    std::strncpy(i.backend, b.c_str(), sizeof(i.backend) - 1);
    *out = i;
  });
}

dsv4_status dsv4_model_get_tokenizer(const dsv4_model* model, const dsv4_tokenizer** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(model, "model");
    require(out, "out");
    if (!model->tokenizer.tok)
      fail(Status::unsupported, "the model was loaded without a tokenizer (no tokenizer.json in its folder)");
    *out = &model->tokenizer;
  });
}

// ---- tokenizer -----------------------------------------------------------------------------------

dsv4_status dsv4_tokenizer_load(const char* path, dsv4_tokenizer** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(path, "path");
    require(out, "out");
    auto t = std::make_unique<dsv4_tokenizer>();
    t->owned = std::make_unique<Tokenizer>(Tokenizer::from_file(path));
    t->tok = t->owned.get();
    *out = t.release();
  });
}

void dsv4_tokenizer_free(dsv4_tokenizer* tokenizer) {
  // A borrowed tokenizer lives inside its dsv4_model: freeing it here would be a double free later.
  if (tokenizer && tokenizer->owned) delete tokenizer;
}

dsv4_status dsv4_tokenizer_get_info(const dsv4_tokenizer* tokenizer, dsv4_tokenizer_info* out) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(out, "out");
    dsv4_tokenizer_info i{};
    i.vocab_size = static_cast<int32_t>(tokenizer->tok->vocab_size());
    i.bos_token_id = tokenizer->tok->bos_id();
    i.eos_token_id = tokenizer->tok->eos_id();
    *out = i;
  });
}

dsv4_status dsv4_tokenizer_encode(const dsv4_tokenizer* tokenizer, const char* text, size_t text_len, bool add_special,
                                  int32_t* buf, size_t cap, size_t* n_needed) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(n_needed, "n_needed");
    if (text_len) require(text, "text");
    const std::vector<int32_t> ids = tokenizer->tok->encode(std::string_view(text ? text : "", text_len), add_special);
    capi::copy_out(ids.data(), ids.size(), sizeof(int32_t), false, buf, cap, n_needed, "dsv4_tokenizer_encode");
  });
}

dsv4_status dsv4_tokenizer_decode(const dsv4_tokenizer* tokenizer, const int32_t* tokens, size_t n_tokens,
                                  bool skip_special, char* buf, size_t cap, size_t* n_needed) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(n_needed, "n_needed");
    if (n_tokens) require(tokens, "tokens");
    const std::string text = tokenizer->tok->decode(std::span<const int32_t>(tokens, n_tokens), skip_special);
    capi::copy_out(text.data(), text.size(), 1, true, buf, cap, n_needed, "dsv4_tokenizer_decode");
  });
}

dsv4_status dsv4_tokenizer_token_to_id(const dsv4_tokenizer* tokenizer, const char* token, int32_t* id) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(token, "token");
    require(id, "id");
    const std::optional<int32_t> r = tokenizer->tok->token_to_id(token);
    *id = r ? *r : -1;
  });
}

dsv4_status dsv4_stream_decoder_create(const dsv4_tokenizer* tokenizer, bool skip_special,
                                       dsv4_stream_decoder** out) {
  if (out) *out = nullptr;
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(out, "out");
    *out = new dsv4_stream_decoder{StreamDecoder(*tokenizer->tok, skip_special), {}};
  });
}

void dsv4_stream_decoder_free(dsv4_stream_decoder* decoder) { delete decoder; }

dsv4_status dsv4_stream_decoder_push(dsv4_stream_decoder* decoder, int32_t token, const char** text, size_t* len) {
  return guard([&] {
    require(decoder, "decoder");
    require(text, "text");
    require(len, "len");
    StreamDecoder copy = decoder->dec;  // push may throw on a bad id: keep the decoder unchanged then
    std::string piece = copy.push(token);
    decoder->dec = std::move(copy);
    decoder->last = std::move(piece);
    *text = decoder->last.c_str();
    *len = decoder->last.size();
  });
}

dsv4_status dsv4_stream_decoder_flush(dsv4_stream_decoder* decoder, const char** text, size_t* len) {
  return guard([&] {
    require(decoder, "decoder");
    require(text, "text");
    require(len, "len");
    decoder->last = decoder->dec.flush();
    *text = decoder->last.c_str();
    *len = decoder->last.size();
  });
}

}  // extern "C"
