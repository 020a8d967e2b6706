// Levelled logging through fmt to stderr. The level is per Logger object (no global mutable state);
// components take a `const Logger&` so that hosts (CLI, C API, Python) choose the verbosity.
// DSV4_LOG_LEVEL=debug|info|warn|error|off sets the default level of Logger::from_env().
#pragma once
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dsv4 {

enum class LogLevel : int { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

class Logger {
 public:
  explicit Logger(LogLevel level = LogLevel::info) : level_(level) {}
  static Logger from_env(LogLevel fallback = LogLevel::info) {
    const char* v = std::getenv("DSV4_LOG_LEVEL");
    if (!v) return Logger(fallback);
    if (!std::strcmp(v, "debug")) return Logger(LogLevel::debug);
    if (!std::strcmp(v, "info")) return Logger(LogLevel::info);
    if (!std::strcmp(v, "warn")) return Logger(LogLevel::warn);
    if (!std::strcmp(v, "error")) return Logger(LogLevel::error);
    if (!std::strcmp(v, "off")) return Logger(LogLevel::off);
    return Logger(fallback);
  }
  LogLevel level() const { return level_; }
  bool enabled(LogLevel l) const { return static_cast<int>(l) >= static_cast<int>(level_); }

  template <typename... A> void debug(fmt::format_string<A...> f, A&&... a) const { emit(LogLevel::debug, "debug", f, std::forward<A>(a)...); }
  template <typename... A> void info(fmt::format_string<A...> f, A&&... a) const { emit(LogLevel::info, "info", f, std::forward<A>(a)...); }
  template <typename... A> void warn(fmt::format_string<A...> f, A&&... a) const { emit(LogLevel::warn, "warn", f, std::forward<A>(a)...); }
  template <typename... A> void error(fmt::format_string<A...> f, A&&... a) const { emit(LogLevel::error, "error", f, std::forward<A>(a)...); }

 private:
  template <typename... A>
  void emit(LogLevel l, const char* tag, fmt::format_string<A...> f, A&&... a) const {
    if (!enabled(l)) return;
    fmt::print(stderr, "[dsv4 {}] {}\n", tag, fmt::format(f, std::forward<A>(a)...));
  }
  LogLevel level_;
};

}  // namespace dsv4
