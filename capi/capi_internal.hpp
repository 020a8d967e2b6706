// Internals shared by the C API translation units: the concrete handle structs behind the opaque
// C types, and `guard`, the one place where C++ exceptions become a dsv4_status plus the
// thread-local dsv4_last_error() text (nothing may unwind through an extern "C" function).
// Not installed; hosts only see capi/dsv4.h.
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dsv4.h"
#include "dsv4/engine.hpp"
#include "dsv4/error.hpp"
#include "dsv4/log.hpp"
#include "dsv4/sampler.hpp"
#include "dsv4/tokenizer.hpp"

struct dsv4_tokenizer {
  const dsv4::Tokenizer* tok = nullptr;
  std::unique_ptr<dsv4::Tokenizer> owned;  // set for dsv4_tokenizer_load; empty when borrowed
};

struct dsv4_model {
  dsv4::Logger log;  // declared before `model`: the model may keep a reference for its lifetime
  std::unique_ptr<dsv4::Model> model;
  dsv4_tokenizer tokenizer;  // borrowed view of model->tokenizer() (tok == nullptr when none)
};

struct dsv4_session {
  const dsv4_model* model = nullptr;
  std::unique_ptr<dsv4::Session> s;
  dsv4_session_stats stats{};
};

struct dsv4_sampler {
  dsv4::Sampler sampler;
};

struct dsv4_stream_decoder {
  dsv4::StreamDecoder dec;
  std::string last;  // text handed out by the latest push / flush
};

namespace dsv4::capi {

// Stores the message for dsv4_last_error() on this thread and returns `st`.
dsv4_status set_error(dsv4_status st, std::string_view message);
void clear_error();

// Runs `f` (returning void) and maps what it throws to a status. Every exported function that
// can fail goes through here, so the error text is always set (or cleared on success).
template <typename F>
dsv4_status guard(F&& f) noexcept {
  clear_error();
  try {
    f();
    return DSV4_OK;
  } catch (const dsv4::Error& e) {
    return set_error(static_cast<dsv4_status>(e.status()), e.what());
  } catch (const nlohmann::json::exception& e) {
    // Raw JSON errors only come from caller-supplied JSON (the core wraps its own file errors).
    return set_error(DSV4_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return set_error(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return set_error(DSV4_ERR_INTERNAL, e.what());
  } catch (...) {
    return set_error(DSV4_ERR_INTERNAL, "unknown exception");
  }
}

// Throws Error(invalid_argument) naming `what` when `p` is NULL.
inline void require(const void* p, const char* what) {
  if (!p) fail(Status::invalid_argument, "{} must not be NULL", what);
}

// Applies the buffer convention of dsv4.h: stores the size needed, copies when it fits.
// `text` results need one more byte for the NUL terminator.
void copy_out(const void* src, size_t n_elems, size_t elem_size, bool text, void* buf, size_t cap,
              size_t* n_needed, const char* what);

// Sampler parameters from the C struct (checked by a trial run on a dummy row).
dsv4::SamplerParams to_sampler_params(const dsv4_sampler_params& p);

}  // namespace dsv4::capi
