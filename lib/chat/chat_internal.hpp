// Internal helpers of the chat format (lib/chat only): Python-compatible JSON decoding of tool-call
// arguments, Python truthiness / str(), and whitespace as Python's `\s` and str.isspace see it.
// Nothing here is public API; include/dsv4/chat_format.hpp is.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/chat_format.hpp"

namespace dsv4::chat::detail {

// Result of Python `json.loads(text)` when it yields a dict: its members in order, each value
// either a string (decoded) or the `json.dumps(ensure_ascii=False)` text of a non-string value.
struct ArgMember {
  std::string key;
  bool is_string = false;
  std::string value;  // decoded string, or dumped JSON of the non-string value
};
struct LoadedArguments {
  bool is_object = false;  // json.loads succeeded but gave a non-dict (the release crashes then)
  std::vector<ArgMember> members;
};
// nullopt when Python's json.loads would raise (the release then falls back to one raw
// `arguments` parameter). Integers keep their exact digits; floats follow Python repr.
std::optional<LoadedArguments> py_json_loads_arguments(std::string_view text);

// Python repr() of a double as json.dumps writes it (NaN / Infinity / -Infinity spelled as json does).
std::string py_float_repr(double v);

// Throws Status::invalid_argument naming `what` when `v` nests deeper than kMaxJsonDepth levels.
// Iterative, so it is safe on any value, also one built in code rather than parsed through
// parse_json_limited: the encoder copies and serialises values recursively after this check.
void check_json_depth(const Json& v, const char* what);

// Python truthiness of a JSON value (null, false, 0, "", [], {} are falsy).
bool py_truthy(const Json& v);

// Python str() of a scalar JSON value as f-strings / str.format render it (None, True, 1.5, raw
// string). Containers throw Status::invalid_argument with `what` naming the field: the release
// would print a Python repr that the model never saw in training.
std::string py_str(const Json& v, const std::string& what);

// Length in bytes of the Python-whitespace character at s[i] (Unicode White_Space plus the
// \x1c-\x1f separators, as `\s` in a str regex), 0 when it is not one.
size_t py_space_len(std::string_view s, size_t i);


// ---- DSML grammar shared by the strict and lenient parsers (spec §8.2) -------------------------
struct DsmlParam {
  std::string name;
  bool is_string = false;
  std::string value;
};
// The release's invoke-header rule `^\s*name="(.*?)">\n$` (DOTALL, `$` also before a final
// newline) applied to the text between `<｜DSML｜invoke` and the next parameter / invoke close.
std::optional<std::string> strict_invoke_name(std::string_view header);
// The release's parameter rule `^ name="(.*?)" string="(true|false)">(.*?)<$` applied to the text
// between `<｜DSML｜parameter` and `/｜DSML｜parameter`.
std::optional<DsmlParam> strict_param(std::string_view body);
// One member of the reconstructed arguments object: `"KEY": VALUE` with VALUE quoted for
// string="true" and verbatim for string="false".
std::string arguments_member(const DsmlParam& p);

}  // namespace dsv4::chat::detail
