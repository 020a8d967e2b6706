// Reading `tokenizer.json` into TokenizerData: every field the encoder relies on is checked here, so
// that encode/decode never meet a malformed table. Errors name the file and the JSON path of the
// offending field; anything `tokenizers` would do differently from what we implement (another model,
// normalizer, pre-tokenizer, decoder or post-processor type) is Status::unsupported.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv4/error.hpp"
#include "dsv4/json_limits.hpp"
#include "dsv4/tokenizer.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4::tok {
using json = nlohmann::json;

namespace {

const json& null_json() {
  static const json n;  // immutable
  return n;
}
// obj[key] or a null value, by reference: never a copy (copying a value recurses through it).
const json& opt_field(const json& obj, const char* key) {
  if (!obj.is_object()) return null_json();
  auto it = obj.find(key);
  return it == obj.end() ? null_json() : *it;
}

const json& need(const json& obj, const char* key, const std::string& origin, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key))
    fail(Status::format, "{}: field {}{}{} is missing", origin, where, where.empty() ? "" : ".", key);
  return obj.at(key);
}

std::string need_string(const json& obj, const char* key, const std::string& origin, const std::string& where) {
  const json& v = need(obj, key, origin, where);
  if (!v.is_string()) fail(Status::format, "{}: field {}.{} must be a string", origin, where, key);
  return v.get<std::string>();
}

bool opt_bool(const json& obj, const char* key, bool fallback, const std::string& origin, const std::string& where) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  if (!obj.at(key).is_boolean()) fail(Status::format, "{}: field {}.{} must be a boolean", origin, where, key);
  return obj.at(key).get<bool>();
}

bool is_empty_or_null(const json& obj, const char* key) {
  if (!obj.contains(key) || obj.at(key).is_null()) return true;
  return obj.at(key).is_string() && obj.at(key).get<std::string>().empty();
}

// The identity normalizer: null or (nested) empty Sequence.
void check_normalizer(const json& n, const std::string& origin, const std::string& where) {
  if (n.is_null()) return;
  const std::string type = need_string(n, "type", origin, where);
  if (type != "Sequence")
    fail(Status::unsupported, "{}: {}.type '{}' is not supported (only an empty normalizer)", origin, where, type);
  const json& list = need(n, "normalizers", origin, where);
  if (!list.is_array()) fail(Status::format, "{}: {}.normalizers must be an array", origin, where);
  for (size_t i = 0; i < list.size(); ++i) check_normalizer(list[i], origin, fmt::format("{}.normalizers[{}]", where, i));
}

SplitBehavior parse_behavior(const std::string& b, const std::string& origin, const std::string& where) {
  if (b == "Isolated") return SplitBehavior::isolated;
  if (b == "Removed") return SplitBehavior::removed;
  if (b == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (b == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (b == "Contiguous") return SplitBehavior::contiguous;
  fail(Status::unsupported, "{}: {}.behavior '{}' is not supported", origin, where, b);
}

// The GPT-2 pattern ByteLevel uses when use_regex is true (as `tokenizers` defines it).
constexpr const char* kByteLevelPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

void parse_pre(const json& p, const std::string& origin, const std::string& where, std::vector<PreStep>& steps) {
  if (p.is_null()) return;
  const std::string type = need_string(p, "type", origin, where);
  if (!steps.empty() && steps.back().byte_level)
    fail(Status::unsupported, "{}: {} ({}) follows ByteLevel; only ByteLevel as the last step is supported", origin,
         where, type);
  if (type == "Sequence") {
    const json& list = need(p, "pretokenizers", origin, where);
    if (!list.is_array()) fail(Status::format, "{}: {}.pretokenizers must be an array", origin, where);
    for (size_t i = 0; i < list.size(); ++i) parse_pre(list[i], origin, fmt::format("{}.pretokenizers[{}]", where, i), steps);
  } else if (type == "Split") {
    const json& pat = need(p, "pattern", origin, where);
    PreStep st;
    const std::string what = fmt::format("{}: {}.pattern", origin, where);
    if (pat.is_object() && pat.contains("Regex") && pat.at("Regex").is_string()) {
      st.regex = std::make_unique<Regex>(pat.at("Regex").get<std::string>(), what);
    } else if (pat.is_object() && pat.contains("String") && pat.at("String").is_string()) {
      st.regex = std::make_unique<Regex>(pat.at("String").get<std::string>(), what, /*literal=*/true);
    } else {
      fail(Status::format, "{} must be {{\"Regex\": str}} or {{\"String\": str}}", what);
    }
    st.behavior = parse_behavior(need_string(p, "behavior", origin, where), origin, where);
    st.invert = opt_bool(p, "invert", false, origin, where);
    steps.push_back(std::move(st));
  } else if (type == "ByteLevel") {
    PreStep st;
    st.byte_level = true;
    st.add_prefix_space = opt_bool(p, "add_prefix_space", true, origin, where);
    if (opt_bool(p, "use_regex", true, origin, where))
      st.regex = std::make_unique<Regex>(kByteLevelPattern, fmt::format("{}: ByteLevel regex", origin));
    steps.push_back(std::move(st));
  } else {
    fail(Status::unsupported, "{}: pre-tokenizer {}.type '{}' is not supported (Sequence, Split, ByteLevel)", origin,
         where, type);
  }
}

void check_decoder(const json& d, const std::string& origin, const std::string& where) {
  const std::string type = d.is_null() ? std::string("null") : need_string(d, "type", origin, where);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = need(d, "decoders", origin, where);
    if (list.is_array() && list.size() == 1) return check_decoder(list[0], origin, where + ".decoders[0]");
  }
  fail(Status::unsupported, "{}: decoder {} '{}' is not supported (only ByteLevel)", origin, where, type);
}

// A post-processor id must name a token of the vocabulary (the tables are built by then).
int32_t checked_id(const json& v, const TokenizerData& d, const std::string& origin, const std::string& where) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() >= d.id_kind.size()) ||
      (!v.is_number_unsigned() && (v.get<int64_t>() < 0 || v.get<int64_t>() >= static_cast<int64_t>(d.id_kind.size()))) ||
      d.id_kind[v.get<size_t>()] == 0)
    fail(Status::format, "{}: {} holds {}, which is not a token id of the vocabulary (size {})", origin, where,
         json_brief(v), d.id_kind.size());
  return v.get<int32_t>();
}

void parse_post(const json& p, TokenizerData& d, const std::string& origin, const std::string& where) {
  if (p.is_null()) return;
  const std::string type = need_string(p, "type", origin, where);
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    const json& list = need(p, "processors", origin, where);
    if (!list.is_array()) fail(Status::format, "{}: {}.processors must be an array", origin, where);
    for (size_t i = 0; i < list.size(); ++i) parse_post(list[i], d, origin, fmt::format("{}.processors[{}]", where, i));
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* k : {"cls", "sep"}) {
      const json& v = need(p, k, origin, where);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
        fail(Status::format, "{}: {}.{} must be [token, id]", origin, where, k);
      (k[0] == 'c' ? d.post_prefix : d.post_suffix).push_back(checked_id(v[1], d, origin, where + "." + k));
    }
    return;
  }
  if (type == "TemplateProcessing") {
    const json& single = need(p, "single", origin, where);
    const json& specials = need(p, "special_tokens", origin, where);
    if (!single.is_array()) fail(Status::format, "{}: {}.single must be an array", origin, where);
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const std::string name = need_string(need(item, "SpecialToken", origin, fmt::format("{}.single[{}]", where, i)), "id",
                                           origin, fmt::format("{}.single[{}].SpecialToken", where, i));
      const json& spec = need(specials, name.c_str(), origin, where + ".special_tokens");
      const json& ids = need(spec, "ids", origin, fmt::format("{}.special_tokens.{}", where, name));
      if (!ids.is_array()) fail(Status::format, "{}: {}.special_tokens.{}.ids must be an array", origin, where, name);
      for (const json& id : ids)
        (seen_sequence ? d.post_suffix : d.post_prefix)
            .push_back(checked_id(id, d, origin, fmt::format("{}.special_tokens.{}.ids", where, name)));
    }
    return;
  }
  fail(Status::unsupported, "{}: post-processor {}.type '{}' is not supported", origin, where, type);
}

std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return std::nullopt;
  const json& v = cfg.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return std::nullopt;
}

std::unique_ptr<TokenizerData> load_tokenizer(std::string_view text, const std::string& origin, const json* config) {
  if (text.size() > kMaxTokenizerJsonBytes)
    fail(Status::format, "{}: {} bytes exceeds the {}-byte limit for tokenizer.json", origin, text.size(),
         kMaxTokenizerJsonBytes);
  // Depth-limited: the pipeline sections are walked recursively below.
  const json j = parse_json_bounded(text, origin);
  if (!j.is_object()) fail(Status::format, "{}: top level must be a JSON object", origin);
  auto d = std::make_unique<TokenizerData>();
  d->origin = origin;
  try {
    // ---- model --------------------------------------------------------------------------------
    const json& model = need(j, "model", origin, "");
    const std::string mtype = model.contains("type") ? need_string(model, "type", origin, "model") : "BPE";
    if (mtype != "BPE") fail(Status::unsupported, "{}: model.type '{}' is not supported (only BPE)", origin, mtype);
    if (model.contains("dropout") && !model.at("dropout").is_null() &&
        !(model.at("dropout").is_number() && model.at("dropout").get<double>() == 0.0))
      fail(Status::unsupported, "{}: model.dropout is not supported", origin);
    if (!is_empty_or_null(model, "continuing_subword_prefix") || !is_empty_or_null(model, "end_of_word_suffix"))
      fail(Status::unsupported, "{}: model.continuing_subword_prefix / end_of_word_suffix are not supported", origin);
    d->bpe.fuse_unk = opt_bool(model, "fuse_unk", false, origin, "model");
    d->bpe.ignore_merges = opt_bool(model, "ignore_merges", false, origin, "model");

    const json& vocab = need(model, "vocab", origin, "model");
    if (!vocab.is_object()) fail(Status::format, "{}: model.vocab must be an object", origin);
    int64_t max_id = -1;
    int64_t max_id_at = -1;  // which entry holds it, for the message: -1 vocab, else added_tokens index
    std::string max_id_token;
    std::vector<std::pair<int32_t, std::string>> model_tokens;
    model_tokens.reserve(vocab.size());
    for (const auto& [tok, idv] : vocab.items()) {
      if (!idv.is_number_integer() || idv.get<int64_t>() < 0 || idv.get<int64_t>() > (1 << 30))
        fail(Status::format, "{}: model.vocab[\"{}\"] must be a non-negative integer id", origin, tok);
      const int32_t id = idv.get<int32_t>();
      model_tokens.emplace_back(id, tok);
      if (id > max_id) {
        max_id = id;
        max_id_token = tok;
      }
    }

    // ---- added tokens -------------------------------------------------------------------------
    std::vector<AddedToken> added;
    if (j.contains("added_tokens") && !j.at("added_tokens").is_null()) {
      const json& at = j.at("added_tokens");
      if (!at.is_array()) fail(Status::format, "{}: added_tokens must be an array", origin);
      for (size_t i = 0; i < at.size(); ++i) {
        const std::string w = fmt::format("added_tokens[{}]", i);
        AddedToken t;
        const json& idv = need(at[i], "id", origin, w);
        if (!idv.is_number_integer() || idv.get<int64_t>() < 0 || idv.get<int64_t>() > (1 << 30))
          fail(Status::format, "{}: {}.id must be a non-negative integer", origin, w);
        t.id = idv.get<int32_t>();
        t.content = need_string(at[i], "content", origin, w);
        t.special = opt_bool(at[i], "special", false, origin, w);
        t.lstrip = opt_bool(at[i], "lstrip", false, origin, w);
        t.rstrip = opt_bool(at[i], "rstrip", false, origin, w);
        t.normalized = opt_bool(at[i], "normalized", !t.special, origin, w);
        t.single_word = opt_bool(at[i], "single_word", false, origin, w);
        if (t.id > max_id) {
          max_id = t.id;
          max_id_at = static_cast<int64_t>(i);
        }
        added.push_back(std::move(t));
      }
    }

    // ---- id tables ----------------------------------------------------------------------------
    // The tables hold one slot per id up to the largest (~40 bytes each), so the largest id is
    // checked against the number of tokens before anything is sized by it: ids may leave holes
    // (ids no token uses), but at most as many as there are tokens, plus 1024.
    const size_t entries = model_tokens.size() + added.size();
    if (max_id >= 0 && static_cast<uint64_t>(max_id) >= 2 * entries + 1024)
      fail(Status::format,
           "{}: {} has id {} but the file defines only {} tokens (ids may leave at most as many unused ids "
           "as there are tokens, plus 1024)",
           origin,
           max_id_at < 0 ? fmt::format("model.vocab[{}]", json(max_id_token).dump(-1, ' ', false, json::error_handler_t::replace))
                         : fmt::format("added_tokens[{}]", max_id_at),
           max_id, entries);
    const size_t n = static_cast<size_t>(max_id + 1);
    d->id_token.assign(n, std::string());
    d->id_kind.assign(n, 0);
    for (auto& [id, tok] : model_tokens) {
      d->vocab.emplace(tok, id);
      d->id_token[id] = tok;
      d->id_kind[id] = 1;
    }
    for (const AddedToken& t : added) {
      // `tokenizers` would silently use the model's id for such a token; a file saved by it never
      // disagrees, so a disagreement means a hand-edited file and is reported.
      if (auto it = d->vocab.find(t.content); it != d->vocab.end() && d->id_kind[it->second] == 1 && it->second != t.id)
        fail(Status::format, "{}: added token '{}' has id {} but model.vocab gives it id {}", origin, t.content, t.id,
             it->second);
      d->vocab[t.content] = t.id;  // added tokens win, as in `tokenizers`
      d->id_token[t.id] = t.content;
      d->id_kind[t.id] = t.special ? 3 : 2;
    }
    d->bytes_off.assign(n + 1, 0);
    for (size_t id = 0; id < n; ++id) {
      d->bytes_off[id] = static_cast<uint32_t>(d->bytes.size());
      const std::string& tok = d->id_token[id];
      if (auto raw = byte_level_decode(tok)) d->bytes += *raw;
      else d->bytes += tok;  // ByteLevel decoder: a token with a character outside the alphabet stays as is
    }
    d->bytes_off[n] = static_cast<uint32_t>(d->bytes.size());

    // Byte symbols and merges use the model vocabulary only.
    std::unordered_map<std::string, int32_t> model_vocab;
    model_vocab.reserve(model_tokens.size());
    for (auto& [id, tok] : model_tokens) model_vocab.emplace(tok, id);
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, byte_to_char(static_cast<uint8_t>(b)));
      auto it = model_vocab.find(ch);
      d->bpe.byte_id[b] = it == model_vocab.end() ? -1 : it->second;
    }
    if (!is_empty_or_null(model, "unk_token")) {
      const std::string unk = need_string(model, "unk_token", origin, "model");
      auto it = model_vocab.find(unk);
      if (it == model_vocab.end()) fail(Status::format, "{}: model.unk_token '{}' is not in model.vocab", origin, unk);
      d->bpe.unk_id = it->second;
    }
    if (opt_bool(model, "byte_fallback", false, origin, "model"))
      for (int b = 0; b < 256; ++b)
        if (d->bpe.byte_id[b] < 0)
          fail(Status::unsupported, "{}: model.byte_fallback with an incomplete byte alphabet is not supported", origin);
    if (d->bpe.ignore_merges)
      for (auto& [id, tok] : model_tokens)
        if (auto raw = byte_level_decode(tok)) d->bpe.raw_vocab.emplace(*raw, id);

    const json& merges = need(model, "merges", origin, "model");
    if (!merges.is_array()) fail(Status::format, "{}: model.merges must be an array", origin);
    d->bpe.merges.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& m = merges[r];
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail(Status::format, "{}: model.merges[{}] '{}' must be two tokens separated by one space", origin, r, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(Status::format, "{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"]", origin, r);
      }
      auto ia = model_vocab.find(a), ib = model_vocab.find(b), im = model_vocab.find(a + b);
      if (ia == model_vocab.end() || ib == model_vocab.end() || im == model_vocab.end())
        fail(Status::format, "{}: model.merges[{}] ('{}' '{}') uses a token missing from model.vocab", origin, r, a, b);
      // A repeated pair keeps its last rank, as in `tokenizers` (its merge map is built by insertion).
      d->bpe.merges.insert(ia->second, ib->second, static_cast<int32_t>(r), im->second);
    }

    // ---- pipeline -----------------------------------------------------------------------------
    check_normalizer(opt_field(j, "normalizer"), origin, "normalizer");
    std::vector<PreStep> steps;
    parse_pre(opt_field(j, "pre_tokenizer"), origin, "pre_tokenizer", steps);
    if (steps.empty() || !steps.back().byte_level)
      fail(Status::unsupported, "{}: pre_tokenizer must end with ByteLevel (only byte-level BPE is supported)", origin);
    d->pre = PreTokenizer(std::move(steps));
    check_decoder(opt_field(j, "decoder"), origin, "decoder");
    parse_post(opt_field(j, "post_processor"), *d, origin, "post_processor");
    d->added = std::make_unique<AddedVocab>(std::move(added));
  } catch (const json::exception& e) {
    fail(Status::format, "{}: unexpected JSON content: {}", origin, e.what());
  }

  // ---- BOS / EOS ----------------------------------------------------------------------------
  auto find_named = [&](std::initializer_list<const char*> names) -> int32_t {
    for (const char* nm : names)
      if (auto it = d->vocab.find(nm); it != d->vocab.end()) return it->second;
    return -1;
  };
  if (!d->post_prefix.empty()) d->bos = d->post_prefix.front();
  if (!d->post_suffix.empty()) d->eos = d->post_suffix.back();
  if (config) {
    if (auto s = config_token(*config, "bos_token"); s && d->bos < 0) {
      if (auto it = d->vocab.find(*s); it != d->vocab.end()) d->bos = it->second;
    }
    if (auto s = config_token(*config, "eos_token"); s && d->eos < 0) {
      if (auto it = d->vocab.find(*s); it != d->vocab.end()) d->eos = it->second;
    }
  }
  if (d->bos < 0) d->bos = find_named({"<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>", "<|startoftext|>"});
  if (d->eos < 0) d->eos = find_named({"<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<|endoftext|>"});
  return d;
}

}  // namespace
}  // namespace dsv4::tok

namespace dsv4 {

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& origin) {
  return Tokenizer(tok::load_tokenizer(json_text, origin, nullptr));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail(Status::io, "tokenizer file '{}' does not exist or is not a file", path);
  if (const auto size = fs::file_size(path, ec); !ec && size > kMaxTokenizerJsonBytes)
    fail(Status::format, "{}: {} bytes exceeds the {}-byte limit for tokenizer.json", path, size, kMaxTokenizerJsonBytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(Status::io, "cannot open tokenizer file '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(Status::io, "cannot read tokenizer file '{}'", path);
  // The sibling tokenizer_config.json (if any) names BOS / EOS for tokenizers whose
  // post-processor does not; a malformed one is ignored since it does not change encoding.
  // Read with the same bounds as every other file (a too large or too deep one is ignored too).
  nlohmann::json cfg;
  bool have_cfg = false;
  const fs::path cfg_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg_path, ec)) {
    try {
      cfg = parse_json_file(cfg_path.string(), kMaxConfigJsonBytes);
      have_cfg = true;
    } catch (const Error&) {
    }
  }
  return Tokenizer(tok::load_tokenizer(ss.str(), path, have_cfg ? &cfg : nullptr));
}

}  // namespace dsv4
