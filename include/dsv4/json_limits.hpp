// Bounded JSON reading for every document the library takes from a file (safetensors headers and
// their metadata, model.safetensors.index.json, config.json, tokenizer.json, tokenizer_config.json)
// and for JSON lines a tool reads. nlohmann's parser itself is iterative, but copying, dumping and
// comparing a value recurse once per nesting level, so a 100,000-deep value would overflow the
// stack long after it was parsed. Every such document is therefore checked before it is parsed:
// nesting deeper than kMaxJsonFileDepth levels and files larger than the caller's byte budget are
// rejected with Status::format naming the file. The depth check is one linear scan of the text
// (brackets outside strings), so no deep structure is ever built.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dsv4 {

// Real files nest at most 6 levels (tokenizer.json: root → pre_tokenizer → pretokenizers →
// step → pattern); 64 leaves room for any sane generator.
inline constexpr int kMaxJsonFileDepth = 64;

// Byte budgets per kind of file (a file over its budget is Status::format before anything is
// allocated from it). The real files are far smaller: Flash config.json 3 KB, index.json 6 MB,
// safetensors headers ≤ 1 MB, tokenizer.json 8 MB.
inline constexpr uint64_t kMaxConfigJsonBytes = 16ull << 20;      // config.json, tokenizer_config.json
inline constexpr uint64_t kMaxIndexJsonBytes = 256ull << 20;      // model.safetensors.index.json
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;    // the safetensors crate's own limit
inline constexpr uint64_t kMaxTokenizerJsonBytes = 512ull << 20;  // tokenizer.json

// Deepest nesting of arrays / objects in `text` (0 for a scalar), or `limit + 1` as soon as the text
// goes deeper than `limit`. Brackets inside strings do not count; malformed text gives some value
// (the parser then rejects it). Linear, no allocation.
int json_nesting_depth(std::string_view text, int limit = kMaxJsonFileDepth);

// Parses `text` (depth-checked first). Malformed JSON or nesting deeper than `max_depth` throws
// Error(Status::format) whose message starts with `origin`.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& origin, int max_depth = kMaxJsonFileDepth);
// The same for the order-keeping variant.
nlohmann::ordered_json parse_ordered_json_bounded(std::string_view text, const std::string& origin,
                                                  int max_depth = kMaxJsonFileDepth);

// Reads all of `path`; Status::io when it cannot be opened or read, Status::format when it holds
// more than `max_bytes` bytes (checked from the file size before reading).
std::string read_file_bounded(const std::string& path, uint64_t max_bytes);

// read_file_bounded + parse_json_bounded, errors naming `path`.
nlohmann::json parse_json_file(const std::string& path, uint64_t max_bytes, int max_depth = kMaxJsonFileDepth);

// A short rendering of a JSON value for error messages: scalars as JSON (strings cut to 60
// characters), containers as "an array of N" / "an object of N" (never recursive).
std::string json_brief(const nlohmann::json& v);
std::string json_brief(const nlohmann::ordered_json& v);

}  // namespace dsv4
