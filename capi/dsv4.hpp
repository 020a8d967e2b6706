// Optional C++ convenience over the C API (header-only, installed beside dsv4.h): unique_ptr
// aliases whose deleters call the dsv4_*_free functions, and `check`, which turns a failing
// dsv4_status into an exception carrying dsv4_last_error(). Hosts stay on the stable C ABI.
#pragma once
#include <memory>
#include <stdexcept>
#include <string>

#include "dsv4.h"

namespace dsv4c {

struct ModelDeleter { void operator()(dsv4_model* p) const noexcept { dsv4_model_free(p); } };
struct TokenizerDeleter { void operator()(dsv4_tokenizer* p) const noexcept { dsv4_tokenizer_free(p); } };
struct SessionDeleter { void operator()(dsv4_session* p) const noexcept { dsv4_session_free(p); } };
struct SamplerDeleter { void operator()(dsv4_sampler* p) const noexcept { dsv4_sampler_free(p); } };
struct EngineDeleter { void operator()(dsv4_engine* p) const noexcept { dsv4_engine_free(p); } };
struct StreamDecoderDeleter {
  void operator()(dsv4_stream_decoder* p) const noexcept { dsv4_stream_decoder_free(p); }
};

using ModelPtr = std::unique_ptr<dsv4_model, ModelDeleter>;
using TokenizerPtr = std::unique_ptr<dsv4_tokenizer, TokenizerDeleter>;
using SessionPtr = std::unique_ptr<dsv4_session, SessionDeleter>;
using SamplerPtr = std::unique_ptr<dsv4_sampler, SamplerDeleter>;
using StreamDecoderPtr = std::unique_ptr<dsv4_stream_decoder, StreamDecoderDeleter>;
using EnginePtr = std::unique_ptr<dsv4_engine, EngineDeleter>;  // free it before its ModelPtr

// A failed C API call: the status and the dsv4_last_error() text of that call.
class Error : public std::runtime_error {
 public:
  Error(dsv4_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  dsv4_status status() const noexcept { return status_; }

 private:
  dsv4_status status_;
};

inline void check(dsv4_status st) {
  if (st != DSV4_OK) throw Error(st, dsv4_last_error());
}

}  // namespace dsv4c
