// Error reporting inside the C++ core: functions throw dsv4::Error carrying a Status code and a
// message that names the file / tensor / field and what was expected. The C API (capi/) catches
// every exception at its edge and maps it to a dsv4_status plus dsv4_last_error() text; nothing
// inside the core exits the process.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace dsv4 {

// Mirrors `dsv4_status` in capi/dsv4.h (same numeric values; keep them in sync).
enum class Status : int {
  ok = 0,
  invalid_argument = 1,  // a caller-supplied value is out of range or malformed
  io = 2,                // a file is missing, unreadable or truncated
  format = 3,            // a file is readable but its content is not what the format requires
  unsupported = 4,       // valid input this build cannot handle (e.g. unknown model type)
  out_of_memory = 5,
  context_overflow = 6,  // a prompt / session would exceed the configured context
  backend = 7,           // CUDA / NCCL / device failure
  cancelled = 8,         // a callback asked to stop
  internal = 9,
  buffer_too_small = 10,  // C API buffer convention: the needed size is returned, nothing written
  busy = 11,              // a queue is full: try again later (a server's 429 / 503)
};

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

template <typename... Args>
[[noreturn]] void fail(Status status, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(status, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace dsv4
