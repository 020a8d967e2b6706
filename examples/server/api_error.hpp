// ApiError: every failure the server reports to a client, as the HTTP status plus the fields of
// OpenAI's error object {"error": {"message", "type", "param", "code"}}. Request parsing and the
// route handlers throw it; the HTTP edge (http_server.cpp) turns it into the response, and turns
// any other exception into a 500 with the same body shape, so no input can crash the server.
#pragma once
#include <stdexcept>
#include <string>

#include "dsv4/error.hpp"

namespace dsv4::server {

class ApiError : public std::runtime_error {
 public:
  // `type` empty = the conventional type for the status (error_type_for).
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {},
           std::string type = {});
  int status() const noexcept { return status_; }
  const std::string& type() const noexcept { return type_; }
  const std::string& param() const noexcept { return param_; }  // empty = null
  const std::string& code() const noexcept { return code_; }    // empty = null

 private:
  int status_;
  std::string type_, param_, code_;
};

// OpenAI's error "type" by status: 400/404/405/413 invalid_request_error, 401
// authentication_error, 429 rate_limit_error, 503 service_unavailable_error, 5xx server_error.
const char* error_type_for(int status);

// 400 naming the offending request field (OpenAI's "param").
[[noreturn]] void bad_param(const std::string& param, const std::string& message);

// A core dsv4::Error surfacing from a request: invalid_argument, context_overflow and
// out_of_memory (the request can never fit the state budget) → 400, busy (queue full) → 429,
// anything else → 500.
ApiError from_core_error(const dsv4::Error& e, const std::string& param = {});

}  // namespace dsv4::server
