// Minimal flag parsing for the dsv4 subcommands: `--name value`, `--name=value` and boolean
// `--flag`; positional arguments are kept in order. Unknown flags are a usage error naming the flag.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/error.hpp"
#include "dsv4/numerics.hpp"

namespace dsv4::cli {

// --numerics reference|official (dsv4/numerics.hpp).
inline Numerics parse_numerics(const std::string& v) {
  if (v == "reference") return Numerics::reference;
  if (v == "official") return Numerics::official;
  fail(Status::invalid_argument, "--numerics: '{}' (expected reference or official)", v);
}

// --backend-params key=value,key=value: backend-specific settings (docs/architecture.md "Backend
// settings"; the backend validates the keys and values).
inline void add_backend_params(const std::string& text, std::vector<std::pair<std::string, std::string>>& out) {
  size_t b = 0;
  while (b <= text.size() && !text.empty()) {
    const size_t e = std::min(text.find(',', b), text.size());
    const std::string item = text.substr(b, e - b);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      fail(Status::invalid_argument, "--backend-params: '{}' is not key=value", item);
    out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    b = e + 1;
    if (e == text.size()) break;
  }
}

class Flags {
 public:
  // `valued`: flags that take a value; `boolean`: flags that do not.
  Flags(const std::vector<std::string>& args, std::set<std::string> valued, std::set<std::string> boolean = {}) {
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.rfind("--", 0) != 0 || a == "--") {
        positional_.push_back(a);
        continue;
      }
      const size_t eq = a.find('=');
      const bool has_value = eq != std::string::npos;
      const std::string name(a, 2, has_value ? eq - 2 : std::string::npos);
      std::string value = has_value ? std::string(a, eq + 1) : std::string();
      if (boolean.count(name)) {
        if (has_value) fail(Status::invalid_argument, "flag --{} takes no value", name);
        values_[name] = std::string(1, '1');
      } else if (valued.count(name)) {
        if (!has_value) {
          if (i + 1 >= args.size()) fail(Status::invalid_argument, "flag --{} needs a value", name);
          value = args[++i];
        }
        values_[name] = value;
      } else {
        fail(Status::invalid_argument, "unknown flag --{}", name);
      }
    }
  }
  bool has(const std::string& n) const { return values_.count(n) != 0; }
  std::string get(const std::string& n, const std::string& fallback = "") const {
    auto it = values_.find(n);
    return it == values_.end() ? fallback : it->second;
  }
  std::string require(const std::string& n) const {
    if (!has(n)) fail(Status::invalid_argument, "missing required flag --{}", n);
    return get(n);
  }
  long long get_int(const std::string& n, long long fallback) const {
    if (!has(n)) return fallback;
    try {
      size_t pos = 0;
      long long v = std::stoll(get(n), &pos);
      if (pos != get(n).size()) throw std::invalid_argument("trailing");
      return v;
    } catch (const std::exception&) {
      fail(Status::invalid_argument, "flag --{}: '{}' is not an integer", n, get(n));
    }
  }
  double get_double(const std::string& n, double fallback) const {
    if (!has(n)) return fallback;
    try {
      size_t pos = 0;
      double v = std::stod(get(n), &pos);
      if (pos != get(n).size()) throw std::invalid_argument("trailing");
      return v;
    } catch (const std::exception&) {
      fail(Status::invalid_argument, "flag --{}: '{}' is not a number", n, get(n));
    }
  }
  // A comma-separated list of integers in [lo, hi], e.g. "--chunks 37,1,1,5"; errors name the flag
  // and the offending item.
  std::vector<long long> get_int_list(const std::string& n, long long lo, long long hi) const {
    const std::string s = require(n);
    std::vector<long long> out;
    size_t b = 0;
    while (true) {
      const size_t e = s.find(',', b);
      const std::string item(s, b, e == std::string::npos ? std::string::npos : e - b);
      try {
        size_t pos = 0;
        const long long v = std::stoll(item, &pos);
        if (pos != item.size() || v < lo || v > hi) throw std::out_of_range("range");
        out.push_back(v);
      } catch (const std::exception&) {
        fail(Status::invalid_argument, "flag --{}: '{}' is not an integer in [{}, {}]", n, item, lo, hi);
      }
      if (e == std::string::npos) return out;
      b = e + 1;
    }
  }
  // --device N or --devices 0,1,… (vLLM-style device list; several GPUs need expert parallelism,
  // which the backend refuses with a clear error until it is available): the load's device ids.
  std::vector<int> get_devices() const {
    if (has("device") && has("devices")) fail(Status::invalid_argument, "give --device or --devices, not both");
    std::vector<int> ids;
    if (has("device")) ids.push_back(static_cast<int>(get_int_list("device", 0, 1023).at(0)));
    if (has("devices"))
      for (long long v : get_int_list("devices", 0, 1023)) {
        if (std::find(ids.begin(), ids.end(), static_cast<int>(v)) != ids.end())
          fail(Status::invalid_argument, "flag --devices: device {} is listed twice", v);
        ids.push_back(static_cast<int>(v));
      }
    return ids;
  }
  // Token ids: a comma-separated list in [0, INT32_MAX] (the vocabulary bound is the model's check).
  std::vector<int32_t> get_id_list(const std::string& n) const {
    std::vector<int32_t> ids;
    for (long long v : get_int_list(n, 0, INT32_MAX)) ids.push_back(static_cast<int32_t>(v));
    return ids;
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace dsv4::cli
