// JSON exactly as Python's json module reads and writes it, for the chat format: the release
// encoder serializes tool schemas and tool-call argument values with json.dumps(ensure_ascii=False)
// and decodes arguments with json.loads, so byte-identical prompts need Python's float repr, exact
// big integers, its string escapes and its dict semantics (duplicate key: last value, first place).
// Pure functions; no state.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "chat_internal.hpp"
#include "dsv4/chat_format.hpp"
#include "dsv4/error.hpp"
#include "dsv4/utf8.hpp"

namespace dsv4::chat {

std::string py_json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);  // Python writes lowercase hex
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));  // non-ASCII raw (ensure_ascii=False), DEL raw too
        }
    }
  }
  out.push_back('"');
  return out;
}

namespace detail {

std::string py_float_repr(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits (the same digits Python's repr picks), in scientific form.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  size_t i = 0;
  if (sci[0] == '-') {
    out.push_back('-');
    i = 1;
  }
  const size_t epos = sci.find('e');
  std::string digits;
  for (size_t k = i; k < epos; ++k)
    if (sci[k] != '.') digits.push_back(sci[k]);
  const int exp10 = std::stoi(sci.substr(epos + 1));
  const int n = static_cast<int>(digits.size());
  const int decpt = exp10 + 1;  // position of the decimal point relative to the digits
  if (decpt <= -4 || decpt > 16) {
    // Python repr switches to exponent form outside 1e-4 <= |v| < 1e16.
    out.push_back(digits[0]);
    if (n > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += ebuf;
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-decpt), '0');
    out += digits;
  } else if (decpt < n) {
    out.append(digits, 0, static_cast<size_t>(decpt));
    out.push_back('.');
    out.append(digits, static_cast<size_t>(decpt));
  } else {
    out += digits;
    out.append(static_cast<size_t>(decpt - n), '0');
    out += ".0";
  }
  return out;
}

bool py_truthy(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return v.get<bool>();
    case Json::value_t::number_integer: return v.get<int64_t>() != 0;
    case Json::value_t::number_unsigned: return v.get<uint64_t>() != 0;
    case Json::value_t::number_float: return v.get<double>() != 0.0;
    case Json::value_t::string: return !v.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object: return !v.empty();
    default: return true;
  }
}

std::string py_str(const Json& v, const std::string& what) {
  switch (v.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case Json::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) return "nan";  // str(float('nan')) differs from json's spelling
      if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
      return py_float_repr(d);
    }
    case Json::value_t::string: return v.get<std::string>();
    default:
      fail(Status::invalid_argument, "{}: expected a string, got a JSON {}", what, v.type_name());
  }
}

size_t py_space_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  if (c < 0x80) return 0;
  auto at = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  if (c == 0xC2 && (at(i + 1) == 0x85 || at(i + 1) == 0xA0)) return 2;  // U+0085, U+00A0
  if (c == 0xE1 && at(i + 1) == 0x9A && at(i + 2) == 0x80) return 3;    // U+1680
  if (c == 0xE2 && at(i + 1) == 0x80) {
    const unsigned d = at(i + 2);
    if ((d >= 0x80 && d <= 0x8A) || d == 0xA8 || d == 0xA9 || d == 0xAF) return 3;  // U+2000-200A, 2028, 2029, 202F
  }
  if (c == 0xE2 && at(i + 1) == 0x81 && at(i + 2) == 0x9F) return 3;  // U+205F
  if (c == 0xE3 && at(i + 1) == 0x80 && at(i + 2) == 0x80) return 3;  // U+3000
  return 0;
}

namespace {

// A decoded Python JSON value: scalars are stored already dumped (numbers, literals) or decoded
// (strings); dicts keep first-insertion order with the last value, like Python dicts.
struct PyMember;
struct PyVal {
  enum class Kind { scalar, string, array, object } kind = Kind::scalar;
  std::string text;
  std::vector<PyVal> items;
  // Not std::pair<std::string, PyVal>: a pair of the still incomplete PyVal is ill-formed (clang
  // with libstdc++ rejects it).
  std::vector<PyMember> members;
};
struct PyMember {
  std::string first;
  PyVal second;
};

void dump(const PyVal& v, std::string& out) {
  switch (v.kind) {
    case PyVal::Kind::scalar: out += v.text; break;
    case PyVal::Kind::string: out += py_json_quote(v.text); break;
    case PyVal::Kind::array:
      out.push_back('[');
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        dump(v.items[i], out);
      }
      out.push_back(']');
      break;
    case PyVal::Kind::object:
      out.push_back('{');
      for (size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ", ";
        out += py_json_quote(v.members[i].first);
        out += ": ";
        dump(v.members[i].second, out);
      }
      out.push_back('}');
      break;
  }
}

// Recursive-descent reader with the grammar of CPython's json scanner (C accelerator): JSON plus
// NaN / Infinity / -Infinity, whitespace limited to space, tab, CR, LF, control characters
// forbidden inside strings. Every failure returns false (json.loads would raise).
class PyJsonReader {
 public:
  explicit PyJsonReader(std::string_view s) : s_(s) {}

  bool parse_document(PyVal& out) {
    skip_ws();
    if (!value(out, 0)) return false;
    skip_ws();
    return i_ == s_.size();
  }

 private:
  // CPython raises RecursionError on deep nesting; json.loads callers see an exception either way.
  static constexpr int kMaxDepth = 900;

  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  bool value(PyVal& out, int depth) {
    if (depth > kMaxDepth || i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '"') {
      out.kind = PyVal::Kind::string;
      ++i_;
      return string_body(out.text);
    }
    if (c == '{') return object(out, depth);
    if (c == '[') return array(out, depth);
    out.kind = PyVal::Kind::scalar;
    if (lit("null")) return out.text = "null", true;
    if (lit("true")) return out.text = "true", true;
    if (lit("false")) return out.text = "false", true;
    if (lit("NaN")) return out.text = "NaN", true;
    if (lit("Infinity")) return out.text = "Infinity", true;
    if (lit("-Infinity")) return out.text = "-Infinity", true;
    return number(out.text);
  }

  bool number(std::string& out) {
    const size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !isdigit(s_[i_])) return false;
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
    }
    const size_t int_end = i_;
    bool is_float = false;
    if (i_ + 1 < s_.size() && s_[i_] == '.' && isdigit(s_[i_ + 1])) {
      is_float = true;
      i_ += 2;
      while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      size_t k = i_ + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && isdigit(s_[k])) {
        is_float = true;
        i_ = k;
        while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
      }
    }
    std::string_view lexeme = s_.substr(start, i_ - start);
    if (!is_float) {
      // Python int: exact digits, "-0" is 0.
      out.assign(s_.substr(start, int_end - start));
      if (out == "-0") out = "0";
      return true;
    }
    double d = 0;
    auto r = std::from_chars(lexeme.data(), lexeme.data() + lexeme.size(), d);
    if (r.ec == std::errc::result_out_of_range) {
      // float() saturates: overflow to +-inf, underflow to +-0.0.
      const size_t epos = lexeme.find_first_of("eE");
      const bool neg_exp = epos != std::string_view::npos && epos + 1 < lexeme.size() && lexeme[epos + 1] == '-';
      const bool neg = lexeme[0] == '-';
      d = neg_exp ? (neg ? -0.0 : 0.0) : (neg ? -HUGE_VAL : HUGE_VAL);
    } else if (r.ec != std::errc()) {
      return false;
    }
    out = py_float_repr(d);
    return true;
  }

  static bool isdigit(char c) { return c >= '0' && c <= '9'; }

  bool hex4(uint32_t& v) {
    if (i_ + 4 > s_.size()) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else return false;
    }
    i_ += 4;
    return true;
  }

  bool string_body(std::string& out) {
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;  // strict=True: raw control characters are invalid
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      if (++i_ >= s_.size()) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
            const size_t save = i_;
            i_ += 2;
            uint32_t lo = 0;
            if (hex4(lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              i_ = save;  // not a pair: the high surrogate stays alone
            }
          }
          append_utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
    return false;
  }

  bool array(PyVal& out, int depth) {
    out.kind = PyVal::Kind::array;
    ++i_;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
    while (true) {
      skip_ws();
      PyVal item;
      if (!value(item, depth + 1)) return false;
      out.items.push_back(std::move(item));
      skip_ws();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == ']') return ++i_, true;
      if (s_[i_] != ',') return false;
      ++i_;
    }
  }

  bool object(PyVal& out, int depth) {
    out.kind = PyVal::Kind::object;
    ++i_;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
    while (true) {
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != '"') return false;
      ++i_;
      std::string key;
      if (!string_body(key)) return false;
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != ':') return false;
      ++i_;
      skip_ws();
      PyVal v;
      if (!value(v, depth + 1)) return false;
      bool replaced = false;
      for (auto& m : out.members) {
        if (m.first == key) {
          m.second = std::move(v);
          replaced = true;
          break;
        }
      }
      if (!replaced) out.members.push_back(PyMember{std::move(key), std::move(v)});
      skip_ws();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == '}') return ++i_, true;
      if (s_[i_] != ',') return false;
      ++i_;
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

void dump_json(const Json& v, std::string& out, int depth = 0) {
  // Values built in code (not parsed through parse_json_limited) may nest arbitrarily: bounded.
  if (depth > kMaxJsonDepth)
    fail(Status::invalid_argument, "cannot serialize JSON nested deeper than {} levels", kMaxJsonDepth);
  switch (v.type()) {
    case Json::value_t::null: out += "null"; break;
    case Json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case Json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case Json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case Json::value_t::number_float: out += py_float_repr(v.get<double>()); break;
    case Json::value_t::string: out += py_json_quote(v.get_ref<const std::string&>()); break;
    case Json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : v) {
        if (!first) out += ", ";
        first = false;
        dump_json(item, out, depth + 1);
      }
      out.push_back(']');
      break;
    }
    case Json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, item] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += py_json_quote(k);
        out += ": ";
        dump_json(item, out, depth + 1);
      }
      out.push_back('}');
      break;
    }
    default:
      fail(Status::invalid_argument, "cannot serialize a JSON {} value", v.type_name());
  }
}

}  // namespace

std::optional<LoadedArguments> py_json_loads_arguments(std::string_view text) {
  PyVal root;
  PyJsonReader reader(text);
  if (!reader.parse_document(root)) return std::nullopt;
  LoadedArguments out;
  if (root.kind != PyVal::Kind::object) return out;
  out.is_object = true;
  for (auto& [k, v] : root.members) {
    ArgMember m;
    m.key = k;
    if (v.kind == PyVal::Kind::string) {
      m.is_string = true;
      m.value = std::move(v.text);
    } else {
      dump(v, m.value);
    }
    out.members.push_back(std::move(m));
  }
  return out;
}

}  // namespace detail

void detail::check_json_depth(const Json& v, const char* what) {
  std::vector<std::pair<const Json*, int>> todo{{&v, 0}};
  while (!todo.empty()) {
    const auto [j, depth] = todo.back();
    todo.pop_back();
    if (!j->is_structured()) continue;
    if (depth >= kMaxJsonDepth)
      fail(Status::invalid_argument, "{}: JSON nested deeper than {} levels", what, kMaxJsonDepth);
    for (const auto& item : *j)
      if (item.is_structured()) todo.push_back({&item, depth + 1});
  }
}

Json parse_json_limited(std::string_view text, const char* what) {
  // The callback sees each container open at the depth of its parent (0 for the top level); it
  // throws before the parser descends further, so no deep structure is ever built.
  const Json::parser_callback_t limit = [what](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth)
      fail(Status::invalid_argument, "{}: JSON nested deeper than {} levels", what, kMaxJsonDepth);
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), limit);
  } catch (const nlohmann::json::exception& e) {
    fail(Status::invalid_argument, "{} is not valid JSON: {}", what, e.what());
  }
}

std::string py_json_dumps(const Json& value) {
  std::string out;
  detail::dump_json(value, out);
  return out;
}

}  // namespace dsv4::chat
