// Bounded JSON reading (contract in include/dsv4/json_limits.hpp).
#include "dsv4/json_limits.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dsv4/error.hpp"

namespace dsv4 {

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limit) return limit + 1;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return deepest;
}

namespace {
template <typename J>
J parse_bounded(std::string_view text, const std::string& origin, int max_depth) {
  if (json_nesting_depth(text, max_depth) > max_depth)
    fail(Status::format, "{}: JSON nested deeper than {} levels", origin, max_depth);
  try {
    return J::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(Status::format, "{}: malformed JSON: {}", origin, e.what());
  }
}

template <typename J>
std::string brief(const J& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::array: return fmt::format("an array of {}", v.size());
    case nlohmann::json::value_t::object: return fmt::format("an object of {}", v.size());
    case nlohmann::json::value_t::string: {
      const auto& s = v.template get_ref<const std::string&>();
      if (s.size() <= 60) return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return J(s.substr(0, 60)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
             fmt::format(" (… {} bytes)", s.size());
    }
    default: return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}
}  // namespace

nlohmann::json parse_json_bounded(std::string_view text, const std::string& origin, int max_depth) {
  return parse_bounded<nlohmann::json>(text, origin, max_depth);
}
nlohmann::ordered_json parse_ordered_json_bounded(std::string_view text, const std::string& origin, int max_depth) {
  return parse_bounded<nlohmann::ordered_json>(text, origin, max_depth);
}

std::string read_file_bounded(const std::string& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(Status::io, "{}: cannot open", path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes)
    fail(Status::format, "{}: {} bytes exceeds the {}-byte limit for this kind of file", path,
         static_cast<uint64_t>(st.st_size), max_bytes);
  std::string out;
  // Not a regular file (a pipe, say): read in pieces and stop at the budget.
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (out.size() > max_bytes)
      fail(Status::format, "{}: more than the {}-byte limit for this kind of file", path, max_bytes);
  }
  if (in.bad()) fail(Status::io, "{}: read error", path);
  return out;
}

nlohmann::json parse_json_file(const std::string& path, uint64_t max_bytes, int max_depth) {
  return parse_json_bounded(read_file_bounded(path, max_bytes), path, max_depth);
}

std::string json_brief(const nlohmann::json& v) { return brief(v); }
std::string json_brief(const nlohmann::ordered_json& v) { return brief(v); }

}  // namespace dsv4
