// ApiError and the status → OpenAI error-type table (contract in api_error.hpp).
#include "api_error.hpp"

namespace dsv4::server {

ApiError::ApiError(int status, const std::string& message, std::string param, std::string code, std::string type)
    : std::runtime_error(message),
      status_(status),
      type_(type.empty() ? error_type_for(status) : std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

const char* error_type_for(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

void bad_param(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

ApiError from_core_error(const dsv4::Error& e, const std::string& param) {
  switch (e.status()) {
    case Status::invalid_argument: return ApiError(400, e.what(), param, "invalid_value");
    case Status::context_overflow: return ApiError(400, e.what(), param, "context_length_exceeded");
    case Status::out_of_memory: return ApiError(400, e.what(), param, "request_too_large");
    case Status::busy: return ApiError(429, e.what(), {}, "queue_full");
    default: return ApiError(500, e.what(), {}, "internal_error");
  }
}

}  // namespace dsv4::server
