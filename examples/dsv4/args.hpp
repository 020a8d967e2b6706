// Minimal flag parsing for the dsv4 subcommands: `--name value`, `--name=value` and boolean
// `--flag`; positional arguments are kept in order. Unknown flags are a usage error naming the flag.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dsv4/error.hpp"

namespace dsv4::cli {

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
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace dsv4::cli
